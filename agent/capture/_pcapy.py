"""The one place that talks to pcapy-ng: batches out of ``next_batch``, and its errors in our terms."""

from __future__ import annotations

import numpy as np
import pcapy

from agent.base.batch import I64

PcapError = pcapy.PcapError

# pcap_activate() status codes (pcap/pcap.h) that a user can cause.
ACTIVATE_ERRORS = {
    -1: "generic error",
    -5: "no such device",
    -8: "permission denied",
    -9: "interface is not up",
    -11: "permission denied for promiscuous mode",
}
PERMISSION_CODES = (-8, -11)


def _times(m: np.ndarray) -> I64:
    ts: I64 = m[:, 0].astype(np.int64) * 1_000_000 + m[:, 1]
    return ts


def columns(buf: bytes, meta: bytes) -> tuple[np.ndarray, I64, I64, I64]:
    """(data, offset, caplen, ts in microseconds) of a ``next_batch`` result.

    Each column is its own int64 array: the metadata (four uint32 a packet) is not kept.
    """
    m = np.frombuffer(meta, np.uint32).reshape(-1, 4)
    return np.frombuffer(buf, np.uint8), m[:, 2].astype(np.int64), m[:, 3].astype(np.int64), _times(m)


def joined(parts: list[tuple[bytes, bytes]]) -> tuple[np.ndarray, I64, I64, I64]:
    """``columns`` of several ``next_batch`` results read one after another, as one batch.

    The bytes are joined once and the metadata read in one pass: a handful of numpy calls
    whatever the number of parts (a live read gathers a part or two per kernel block).
    """
    if len(parts) == 1:
        return columns(*parts[0])
    bufs = [buf for buf, _ in parts]
    m = np.frombuffer(b"".join(meta for _, meta in parts), np.uint32).reshape(-1, 4)
    # Each part's offsets count from its own buffer: move them by the bytes of the parts before it.
    starts = np.cumsum([0, *(len(buf) for buf in bufs[:-1])])
    offset = m[:, 2].astype(np.int64)
    offset += np.repeat(starts, [len(meta) // 16 for _, meta in parts])
    return np.frombuffer(b"".join(bufs), np.uint8), offset, m[:, 3].astype(np.int64), _times(m)
