"""Vectorised reads of header fields at per-packet offsets in a batch's byte buffer.

Reads never raise: an offset past the buffer is clipped, and callers mask such rows by
comparing the offsets they need against each packet's captured length.
"""

from __future__ import annotations

import numpy as np

from agent.base.batch import I64, U8


def u8(data: U8, at: I64) -> I64:
    """One byte at each offset (zero from an empty buffer: a batch of empty frames)."""
    if data.size == 0:
        return np.zeros(np.shape(at), np.int64)
    return np.take(data, at, mode="clip").astype(np.int64)


def u16(data: U8, at: I64) -> I64:
    """A big-endian 16-bit field at each offset."""
    return (u8(data, at) << 8) | u8(data, at + 1)


def rows(data: U8, at: I64, width: int) -> U8:
    """``width`` bytes from each offset, as an (n, width) array; bytes past the buffer read as zero.

    The buffer is viewed as overlapping ``width``-byte items, one starting at every byte, so
    the gather copies one item per row instead of indexing byte by byte.
    """
    limit = data.size - width
    if limit < 0:
        padded = np.zeros(width, np.uint8)
        padded[: data.size] = data
        data, limit = padded, 0
    out = _items(data, width)[np.minimum(at, limit)]
    over = at > limit
    if over.any():
        # Rows running off the end of the buffer come from a zero-padded copy of its tail.
        tail = np.zeros(2 * width, np.uint8)
        tail[:width] = data[limit:]
        out[over] = _items(tail, width)[np.minimum(at[over] - limit, width)]
    return out.view(np.uint8).reshape(-1, width)


def shifted(matrix: U8, start: I64, width: int) -> U8:
    """``width`` bytes of each row of ``matrix``, from that row's own column ``start`` on (``start + width`` within the row)."""
    m = np.ascontiguousarray(matrix)
    at = np.arange(m.shape[0], dtype=np.int64) * m.shape[1] + start
    out: U8 = _items(m.reshape(-1), width)[at].view(np.uint8).reshape(-1, width)
    return out


def _items(data: U8, width: int) -> np.ndarray:
    return np.ndarray(shape=(data.size - width + 1,), dtype=np.dtype((np.void, width)), buffer=data, strides=(1,))
