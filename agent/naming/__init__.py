"""Naming: devices and domains learned from packets (ARP, DHCP, DNS, mDNS), the registry, its store and the label budgets."""
