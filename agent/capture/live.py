"""Live capture from a network interface through libpcap, in non-blocking mode woken by poll.

A blocking read on an idle interface does not return on libpcap's timeout, so the handle is
non-blocking and the reader waits in ``poll`` on its file descriptor and on an eventfd that
``wake`` writes to: an idle link never holds up shutdown.

What a read costs is paid per wake-up and per batch, whatever the traffic, so both are kept
few. The kernel hands packets over a TPACKET_V3 block at a time: a block is handed over when
it is full or its timeout (a quarter of the batch window, at most 250 ms) expires, so a light
link wakes the reader a few times a second, not a hundred. A batch is handed on when it holds
``max_packets`` packets or ``max_bytes`` bytes, or when its oldest packet is ``window`` old;
or, on a busy link, once it holds ``BUSY_SHARE`` of ``max_packets`` that came in less than
half the window. A busy link hands over batches three quarters full (the pipeline may lag
behind it, and each batch in flight holds memory); a light one gathers a batch a window, as
big as that makes it up to ``max_packets`` (the pipeline is idle between them). Either way
what a batch costs beside its packets (some hundred numpy calls, 1-4 ms) is paid less often:
at 5k packets/s, 5,000-packet batches took 4-9 % less CPU than 4,096-packet ones in
interleaved live runs, and at 20k-400k busy batches of 6,144 took 13-14 % less than 4,096.

A busy link retires a block every few milliseconds, and a reader woken for each one pays its
wake-up, its read and the interpreter changing hands hundreds of times a second. Once a read
has emptied the ring, the reader lets the next blocks gather for a while (``pace``) before it
reads again: at most ``MAX_PACE``, and at most the time the traffic just measured takes to
fill ``RING_SHARE`` of the ring, so a faster link is read sooner and the ring keeps room for
a burst.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import struct
import time

import numpy as np
import pcapy

from agent.base.batch import RawBatch
from agent.capture import CaptureStats, Source, interface_packets, snap
from agent.capture._pcapy import ACTIVATE_ERRORS, PERMISSION_CODES, PcapError, columns, joined
from agent.capture.snap import snap_program
from agent.errors import CaptureError, CapturePermissionError, ConfigError

log = logging.getLogger("pktagent.capture")

# Not `setcap` on the interpreter: the venv's python3 is the system's, and every Python script would capture.
PERMISSION_HINT = (
    "capturing needs CAP_NET_RAW: run as root, give the service AmbientCapabilities=CAP_NET_RAW (the Ansible role does), "
    "or start pktagent alone with it: `sudo setpriv --reuid=$(id -u) --regid=$(id -g) --init-groups "
    "--inh-caps=+net_raw --ambient-caps=+net_raw .venv/bin/pktagent run ...`; `make demo` needs no privileges"
)
IDLE_WAIT = 1.0  # seconds a read waits on an idle link before handing back an empty batch (kernel drop counts refresh then)
BUSY_SHARE = 0.75  # of max_packets: a busy link's batch (6,144 of 8,192)
READ_CHUNK = 512  # packets per next_batch call: pcapy-ng's buffer for 4096 at once peaks at twice the bytes it returns
MAX_BLOCK_TIMEOUT_MS = 250  # a packet waits at most this long in a kernel block before the reader sees it
MAX_PACE = 0.02  # seconds a reader lets blocks gather after emptying the ring (at 100k packets/s: 0.29-0.33 -> 0.25-0.26 us a packet)
RING_SHARE = 0.25  # ... and at most the time the kernel takes to hand over this share of the ring's blocks
MIN_PACE = 0.01  # a shorter wait saves little (many packets a read already) and leaves a stall less room: none then
MIN_BLOCKS = 2  # nor a wait in which fewer blocks come: the reader would wake to find nothing
BLOCK_BYTES = 1 << 18  # libpcap's TPACKET_V3 block: room for one packet of its largest snapshot length, 256 KiB
SLOT_BYTES = 128  # ring bytes a packet takes besides its captured bytes (TPACKET_V3 header, address, alignment), rounded up


def pace(ring_bytes: int, block_timeout: float, read_bytes: int, read_packets: int, seconds: float) -> float:
    """How long a reader that just emptied the ring waits before reading again (seconds).

    ``read_bytes`` captured bytes in ``read_packets`` packets came in over ``seconds``. The
    kernel hands over a block when it is full or ``block_timeout`` after it began, so at that
    rate it hands over one block per timeout plus one per ``BLOCK_BYTES`` of ring. The wait
    lets at most ``RING_SHARE`` of the ring's blocks fill, and never exceeds ``MAX_PACE``.
    No wait (the reader reads each block as the kernel hands it over) when nothing was
    measured; when fewer than ``MIN_BLOCKS`` blocks would come in it (a light link: waking
    to find nothing costs more than it saves); or when it would be under ``MIN_PACE`` (at
    400k packets/s, reads take many packets each already, and a stall of the reader on top
    of a wait could fill the ring).

    >>> pace(4 << 20, 0.25, 0, 0, 0.02)
    0.0
    >>> pace(4 << 20, 0.25, 1_500, 5, 0.001)  # 5k packets/s of 300 bytes: 12 blocks a second, not 2 in 20 ms
    0.0
    >>> pace(4 << 20, 0.25, 30_000, 100, 0.001)  # 100k packets/s: a quarter of 16 blocks in 24 ms, 3 blocks in 20 ms
    0.02
    >>> round(pace(4 << 20, 0.25, 60_000, 200, 0.001), 4)  # 200k packets/s: a quarter of the ring in 12 ms
    0.0121
    >>> pace(4 << 20, 0.25, 120_000, 400, 0.001)  # 400k packets/s: in 6 ms, too short a wait
    0.0
    """
    if read_packets == 0 or seconds <= 0:
        return 0.0
    blocks = max(1, ring_bytes // BLOCK_BYTES)
    per_second = 1 / block_timeout + (read_bytes + SLOT_BYTES * read_packets) / seconds / BLOCK_BYTES
    wait = min(MAX_PACE, RING_SHARE * blocks / per_second)
    return wait if wait >= MIN_PACE and wait * per_second >= MIN_BLOCKS else 0.0


def block_timeout_ms(window: float) -> int:
    """The TPACKET_V3 block timeout for a batch window (seconds): a quarter of it, 1-250 ms."""
    return max(1, min(MAX_BLOCK_TIMEOUT_MS, int(window * 1000 / 4)))


RING_PER_CORE = 2 << 20  # bytes of kernel ring per CPU core, when capture.buffer_bytes is 0
RING_MIN, RING_MAX = 1 << 20, 32 << 20


def ring_bytes(meminfo: str = "/proc/meminfo", cores: int | None = None) -> int:
    """The kernel ring for a host: 2 MiB per core, at most 1/256 of its memory, within 1-32 MiB.

    The ring holds what arrives while the capture thread is not reading (the other threads
    hold the interpreter, or the host's scheduler runs something else); a host with more
    cores sees more traffic, and one with more memory can spare it. Most packets take only
    their headers' room (``agent.capture.snap``), about 200 bytes, so 2 MiB holds some 10,000
    packets: 25 ms at 400k packets/s, and a busy link's reader lets at most a quarter of it
    fill between reads (``pace``). The whole ring is resident from the start. A 512 MB Pi Zero 2 W gets
    2 MiB, a 4 GB Pi 4 8 MiB, the 2-core build VM 4 MiB, a 16-core server 32 MiB. On the
    build VM 2 MiB lost nothing at 400k packets/s in six runs, but lost 563 packets once in
    three runs of the test suite's scrape storm (100 scrapes at once, 100k packets/s, two
    workers, with two cores shared by sender, storm and agent); 4 MiB lost none. Whatever the ring cannot hold is counted in
    ``pktagent_packets_dropped_total{stage="kernel"}``; ``capture.buffer_bytes`` sets it.
    """
    cores = cores or os.cpu_count() or 1
    total = 1 << 40
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return max(RING_MIN, min(RING_MAX, cores * RING_PER_CORE, total // 256))


def _stamp(meta: bytes, at: int) -> float:
    """The capture time (seconds since the epoch) of the packet whose ``next_batch`` metadata starts at ``at``."""
    sec, usec = struct.unpack_from("=II", meta, at)
    return float(sec + usec / 1e6)


def _is_up(interface: str) -> bool:
    try:
        with open(f"/sys/class/net/{interface}/flags") as f:
            return bool(int(f.read().strip(), 16) & 0x1)  # IFF_UP
    except (OSError, ValueError):
        return True  # cannot tell: let libpcap try


def _permission_error(interface: str, message: str) -> CapturePermissionError:
    return CapturePermissionError(f"no permission to capture on {interface} ({message}): {PERMISSION_HINT}")


class LiveSource(Source):
    """Packets from one interface.

    >>> src = LiveSource("eth0", snaplen=65535, promiscuous=False, buffer_bytes=4 << 20)  # doctest: +SKIP
    >>> batch = src.read(4096, 0.01)                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        interface: str,
        *,
        index: int = 0,
        snaplen: int = 65535,
        promiscuous: bool = False,
        buffer_bytes: int = 4 << 20,
        bpf: str | None = None,
        block_timeout_ms: int = 10,
        fanout_group: int | None = None,
        max_bytes: int = 4 << 20,
    ) -> None:
        self.name = interface
        self.max_bytes = max_bytes
        self.ring_bytes = buffer_bytes
        self.block_timeout = block_timeout_ms / 1000
        self.index = index
        self.snaplen = snaplen
        if interface != "any" and os.path.isdir("/sys/class/net"):
            if not os.path.exists(f"/sys/class/net/{interface}"):
                raise CaptureError(f"no such interface: {interface} (see `ip link` for the interfaces this host has)")
            if not _is_up(interface):
                # libpcap would open it and then see nothing: report it down until it comes up.
                raise CaptureError(f"interface {interface} is down")
        # The interface's packet counters before the handle exists: what it carries from now on is
        # captured (or counted dropped); what it carried since an earlier handle closed was not.
        self.carried_at_open = interface_packets(interface)
        try:
            handle = pcapy.create(interface)
            handle.set_snaplen(snaplen)
            handle.set_promisc(int(promiscuous))
            handle.set_timeout(block_timeout_ms)
            handle.set_buffer_size(buffer_bytes)
            status = handle.activate()
        except PcapError as e:
            raise self._open_error(str(e)) from None
        if status is not None and status < 0:
            if status in PERMISSION_CODES:
                raise _permission_error(interface, ACTIVATE_ERRORS[status])
            raise self._open_error(ACTIVATE_ERRORS.get(status, f"libpcap status {status}"))
        try:
            if fanout_group is not None:
                handle.set_fanout(fanout_group, pcapy.PACKET_FANOUT_HASH)
            handle.setnonblock(1)
        except PcapError as e:
            handle.close()
            raise CaptureError(f"cannot set up capture on {interface}: {e}") from None
        self._handle = handle
        self.linktype = int(handle.datalink())
        self.cut = snaplen  # packets captured to this length may have been cut (their wire length is not known here)
        try:
            self.set_filter(bpf or "")
        except ConfigError:
            handle.close()
            raise
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poll = self._poller(handle.getfd())  # the capture and the wake: what a reader waits on for packets
        self._wake_poll = self._poller()  # the wake alone: what a paced reader waits on

    def _poller(self, capture_fd: int | None = None) -> select.poll:
        poller = select.poll()
        if capture_fd is not None:
            poller.register(capture_fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        poller.register(self._wake, select.POLLIN)
        return poller

    def _open_error(self, message: str) -> CaptureError:
        lowered = message.lower()
        if "permission" in lowered or "not permitted" in lowered:
            return _permission_error(self.name, message)
        if "no such device" in lowered:
            return CaptureError(f"no such interface: {self.name} (see `ip link` for the interfaces this host has)")
        return CaptureError(f"cannot capture on {self.name}: {message}")

    def read(self, max_packets: int, window: float) -> RawBatch | None:
        parts: list[tuple[bytes, bytes]] = []
        got = size = 0
        busy = max(1, int(max_packets * BUSY_SHARE))
        deadline: float | None = None
        idle_until = time.monotonic() + IDLE_WAIT
        # What was read since the ring was last emptied, and the kernel's times of its first and last packets.
        since_bytes = since_packets = 0
        first = last = 0.0
        while got < max_packets and size < self.max_bytes:
            try:
                buf, meta = self._handle.next_batch(min((busy if got < busy else max_packets) - got, READ_CHUNK))
            except PcapError as e:
                raise CaptureError(f"capture on {self.name} failed: {e}") from None
            if meta:
                parts.append((buf, meta))
                got += len(meta) // 16
                size += len(buf)
                if not since_packets:
                    first = _stamp(meta, 0)
                last = _stamp(meta, len(meta) - 16)
                since_packets += len(meta) // 16
                since_bytes += len(buf)
                if deadline is None:
                    # The window runs from the oldest packet's arrival: it may have waited in a kernel block.
                    waited = min(max(0.0, time.time() - first), window)
                    deadline = time.monotonic() + window - waited
                if got >= busy and deadline - time.monotonic() > window / 2:
                    break  # a busy link: three quarters of a batch in less than half the window
                continue
            now = time.monotonic()
            until = deadline if deadline is not None else idle_until
            if now >= until:
                break
            # The rate is the kernel's: the packets' own times, however long the reader waited before them.
            gather = min(pace(self.ring_bytes, self.block_timeout, since_bytes, since_packets, last - first), until - now)
            since_bytes = since_packets = 0
            try:
                if gather > 0:
                    # Traffic is flowing: let blocks gather, waking only for a stop.
                    if self._woken(self._wake_poll.poll(int(gather * 1000))):
                        break
                    continue
                events = self._poll.poll(max(1, int((until - now) * 1000)))
            except InterruptedError:
                continue
            if self._woken(events):
                break
            if any(ev & (select.POLLERR | select.POLLHUP) for _, ev in events):
                # The interface went down or away; next_batch reports the reason.
                try:
                    self._handle.next_batch(1)
                except PcapError as e:
                    raise CaptureError(f"capture on {self.name} failed: {e}") from None
                raise CaptureError(f"capture on {self.name} failed: the interface went down or away")
        return self._batch(parts)

    def _woken(self, events: list[tuple[int, int]]) -> bool:
        if not any(fd == self._wake for fd, _ in events):
            return False
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)
        return True

    def wake(self) -> None:
        """Make a waiting ``read`` return now with what it has (the engine is stopping)."""
        with contextlib.suppress(OSError):
            os.eventfd_write(self._wake, 1)

    def _batch(self, parts: list[tuple[bytes, bytes]]) -> RawBatch:
        data, offset, caplen, ts = joined(parts) if parts else columns(b"", b"")
        # A packet shorter than the cut was captured whole; one as long may have been cut (by the
        # header filter or the snaplen), and decode recovers its length from the IP header (0 = not known here).
        wirelen = np.where(caplen < self.cut, caplen, 0)
        return RawBatch(self.index, self.linktype, data, offset, caplen, wirelen, ts)

    def set_filter(self, bpf: str) -> None:
        """The user's BPF filter (at open, and on a reload), keeping only the headers of packets read for headers only."""
        try:
            program = snap_program(self.linktype, self.snaplen, bpf)
            if program is not None:
                snap.attach(self._handle.getfd(), program)
                self.cut = min(self.snaplen, snap.HEADER_SNAP)
                return
        except (PcapError, pcapy.BPFError) as e:  # pcapy.compile raises PcapError for a syntax error
            raise ConfigError(f"bpf_filter: libpcap rejects {bpf!r}: {e}") from None
        except OSError as e:
            log.warning("capture on %s keeps whole packets: the kernel refused the header filter (%s)", self.name, e)
        self.cut = self.snaplen
        try:
            self._handle.setfilter(bpf)
        except (PcapError, pcapy.BPFError) as e:
            raise ConfigError(f"bpf_filter: libpcap rejects {bpf!r}: {e}") from None

    def stats(self) -> CaptureStats:
        try:
            received, dropped, if_dropped = self._handle.stats()
        except PcapError:
            return CaptureStats()
        return CaptureStats(received, dropped, if_dropped)

    def close(self) -> None:
        with contextlib.suppress(KeyError, ValueError, PcapError):
            self._poll.unregister(self._handle.getfd())
        self._handle.close()
        with contextlib.suppress(OSError):
            os.close(self._wake)
