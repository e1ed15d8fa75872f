"""The fixed label values of pktagent's metrics, and the small integer codes the pipeline uses for them.

A column of codes in a batch indexes these tuples; counters are arrays shaped by their lengths.
Nothing here depends on the rest of the package.
"""

from __future__ import annotations

NETWORKS = ("ipv4", "ipv6", "arp", "other")
IPV4, IPV6, ARP, OTHER_NET = range(4)

TRANSPORTS = ("tcp", "udp", "icmp", "icmpv6", "other", "none")
TCP, UDP, ICMP, ICMPV6, OTHER_TRANSPORT, NO_TRANSPORT = range(6)

DIRECTIONS = ("inbound", "outbound", "internal", "external", "none")
INBOUND, OUTBOUND, INTERNAL, EXTERNAL, NO_DIRECTION = range(5)

DROP_STAGES = ("kernel", "interface", "queue", "reopen")

FLOW_END_REASONS = ("fin", "rst", "idle", "active_timeout", "evicted")
END_FIN, END_RST, END_IDLE, END_ACTIVE, END_EVICTED = range(5)

# Decode errors, as (layer, reason). Code 0 means "no error"; code i is DECODE_ERRORS[i - 1].
DECODE_ERRORS = (
    ("link", "truncated"),
    ("vlan", "truncated"),
    ("vlan", "too_many_tags"),
    ("ipv4", "truncated"),
    ("ipv4", "bad_version"),
    ("ipv4", "bad_header_length"),
    ("ipv4", "bad_total_length"),
    ("ipv6", "truncated"),
    ("ipv6", "bad_version"),
    ("ipv6", "bad_payload_length"),
    ("ipv6", "extension_truncated"),
    ("ipv6", "too_many_extensions"),
    ("tcp", "truncated"),
    ("tcp", "bad_header_length"),
    ("udp", "truncated"),
    ("udp", "bad_length"),
    ("icmp", "truncated"),
    ("icmpv6", "truncated"),
    ("arp", "truncated"),
    ("pppoe", "truncated"),
    ("pppoe", "bad_header"),
    ("pppoe", "bad_length"),
    ("ppp", "truncated"),
    ("mpls", "truncated"),
    ("mpls", "payload_not_ip"),
    ("ppi", "truncated"),
    ("ppi", "bad_header"),
    ("ppi", "unsupported_link"),
)


def decode_error_code(layer: str, reason: str) -> int:
    """The code a decoder writes for (layer, reason)."""
    return DECODE_ERRORS.index((layer, reason)) + 1


# Flow-table transports: flows are kept for IP traffic only, so "none" never occurs there.
FLOW_TRANSPORTS = TRANSPORTS[:5]
