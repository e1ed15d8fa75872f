"""Local-network classification and traffic direction, by table lookup on whole address columns.

Each address is looked up by its top 16 bits in a 65,536-entry table per family: the entry
says remote, local, or "check", the last for the few /16s that a longer configured prefix
splits, which are then compared against those prefixes only. The per-packet cost does not
grow with the number of configured networks, so the seed's local-IP cache has no job left.

>>> c = Classifier(["192.168.0.0/16", "fd00::/8"])
>>> c.is_local(np.array([0], np.uint64), np.array([0xFFFF_C0A8_0101], np.uint64)).tolist()
[True]
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import numpy as np

from agent.base import labels
from agent.base.addresses import address_int
from agent.base.arrays import table
from agent.base.batch import U64, Batch, Mask

REMOTE, LOCAL, CHECK = 0, 1, 2
_ALL = (1 << 64) - 1

# (src local, dst local) -> direction
_DIRECTION = np.array(
    [labels.EXTERNAL, labels.INBOUND, labels.OUTBOUND, labels.INTERNAL],
    np.uint8,
)


def _halves(value: int) -> tuple[int, int]:
    return value >> 64, value & _ALL


class Classifier:
    """Decides which addresses are local, and from that each packet's direction."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]
        self._t4 = table(1 << 16, np.uint8)  # a page each for the few networks written; the rest reads as the zero page
        self._t6 = table(1 << 16, np.uint8)
        self._long4: list[tuple[int, int]] = []  # (mask, net) on the 32-bit address
        self._long6: list[tuple[int, int, int, int]] = []  # (mask_hi, mask_lo, net_hi, net_lo)
        for net in sorted(self.networks, key=lambda n: n.prefixlen):
            bits = net.max_prefixlen
            base = int(net.network_address)
            prefixes = self._t4 if net.version == 4 else self._t6
            top = base >> (bits - 16)
            if net.prefixlen <= 16:
                prefixes[top : top + (1 << (16 - net.prefixlen))] = LOCAL
                continue
            if prefixes[top] != LOCAL:
                prefixes[top] = CHECK
            mask = ((1 << net.prefixlen) - 1) << (bits - net.prefixlen)
            if net.version == 4:
                self._long4.append((mask, base))
            else:
                self._long6.append((*_halves(mask), *_halves(base)))

    def is_local(self, hi: U64, lo: U64) -> Mask:
        """True where the 128-bit address (IPv4 as IPv4-mapped) is in a local network."""
        v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
        # A cast to uint16 keeps the low 16 bits: an index numpy takes without a check or a copy to intp.
        code = self._t4[(lo >> np.uint64(16)).astype(np.uint16)]
        if not v4.all():  # IPv6 addresses in the batch: their rows from the IPv6 table
            code = np.where(v4, code, self._t6[(hi >> np.uint64(48)).astype(np.uint16)])
        local: Mask = code == LOCAL
        check = (code == CHECK).nonzero()[0]
        if check.size:
            h, lo_c, c4 = hi[check], lo[check], v4[check]
            a4 = lo_c & np.uint64(0xFFFFFFFF)
            hit = np.zeros(check.size, np.bool_)
            for mask, net in self._long4:
                hit |= c4 & ((a4 & np.uint64(mask)) == np.uint64(net))
            for mh, ml, nh, nl in self._long6:
                hit |= ~c4 & ((h & np.uint64(mh)) == np.uint64(nh)) & ((lo_c & np.uint64(ml)) == np.uint64(nl))
            local[check] = hit
        return local

    def locality(self, addresses: Iterable[str]) -> dict[str, bool]:
        """The same decision for addresses written out (the slow path's), all in one vectorised call."""
        texts = list(addresses)
        full = [address_int(t) for t in texts]
        hi = np.array([f >> 64 for f in full], np.uint64)
        lo = np.array([f & ((1 << 64) - 1) for f in full], np.uint64)
        return dict(zip(texts, self.is_local(hi, lo).tolist()))

    def apply(self, batch: Batch) -> Batch:
        """The batch with ``src_local``, ``dst_local`` and ``direction`` set."""
        src = self.is_local(batch.src_hi, batch.src_lo) & batch.is_ip
        dst = self.is_local(batch.dst_hi, batch.dst_lo) & batch.is_ip
        direction = np.where(batch.is_ip, _DIRECTION[src.astype(np.intp) * 2 + dst], labels.NO_DIRECTION).astype(np.uint8)
        return batch.replace(src_local=src, dst_local=dst, direction=direction)
