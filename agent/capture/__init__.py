"""Capture sources: where raw batches come from.

Every source has the same small interface (``Source``): ``read`` returns the next
``RawBatch`` (empty when nothing arrived in time, ``None`` when the input has ended),
``stats`` returns libpcap's counters, ``close`` releases it. ``LiveSource`` captures from an
interface, ``FileSource`` reads a pcap/pcapng file (at full speed or at its recorded pace),
and ``MemorySource`` serves frames held in memory, for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from agent.base.batch import Batch, RawBatch
from agent.errors import ConfigError


class CaptureStats(NamedTuple):
    """libpcap's counters for one handle: packets received, dropped by the kernel, dropped by the interface."""

    received: int = 0
    kernel_dropped: int = 0
    interface_dropped: int = 0


class Source:
    """What every capture source offers; ``read``, ``stats`` and ``close`` are each source's own.

    The rest has defaults that say "not this kind of source": no map behind the batches, no
    interface counters, nothing to wake, no filter to change while open.
    """

    name: str
    linktype: int
    index: int = 0  # the source's number: batches carry it as ``iface``
    carried_at_open: tuple[int, int] | None = None  # a live interface's (ifindex, packets) when its capture opened

    def read(self, max_packets: int, window: float) -> RawBatch | Batch | None:
        """Up to ``max_packets`` packets, waiting at most ``window`` seconds once the first has come.

        Returns an empty batch when nothing came within the source's idle wait, and None
        when the input has ended (a file read to its end). A source that decodes its
        batches itself (a reader process) returns them as ``Batch``.
        """
        raise NotImplementedError

    def stats(self) -> CaptureStats:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def mapped(self) -> Path | None:
        """The file, while the batches' bytes are a map of it (``data`` is the whole file, offsets are file offsets)."""
        return None

    def wake(self) -> None:
        """Make a read that is waiting out its batch window return now (a stop was asked for)."""

    def set_filter(self, bpf: str) -> None:
        """Change the BPF filter of the open capture (a reload); sources that cannot, refuse."""
        raise ConfigError(f"capture.bpf_filter: the capture of {self.name} cannot change its filter while open: restart pktagent")


def interface_packets(interface: str, sysfs: str = "/sys/class/net") -> tuple[int, int] | None:
    """(ifindex, packets received + sent) from the interface's own counters; None when they cannot be read.

    A capture handle sees both directions, so both count. The counters are the kernel's for
    the interface, before any BPF filter.
    """
    base = f"{sysfs}/{interface}"
    try:
        with open(f"{base}/ifindex") as f:
            index = int(f.read())
        total = 0
        for counter in ("rx_packets", "tx_packets"):
            with open(f"{base}/statistics/{counter}") as f:
                total += int(f.read())
    except (OSError, ValueError):
        return None
    return index, total
