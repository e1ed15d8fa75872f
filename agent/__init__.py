"""pktagent: a network-traffic exporter for Raspberry Pi fleets and small Linux hosts."""

__version__ = "0.1.0"
