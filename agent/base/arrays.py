"""Small array helpers: tables that cost only what they use, and what the hot path needs faster than numpy's general versions.

``np.unique`` in numpy 2.3+ goes through a hash table that costs ~100 us even for a hundred
integers; a sort and a comparison do the same job in a few microseconds.
"""

from __future__ import annotations

import math
import mmap
from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T", bound=np.generic)

LAZY_BYTES = 64 << 10  # a table this big or bigger gets pages of its own


def table(shape: int | tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
    """Zeros for a table sized to its bound, whose pages take memory only once written.

    ``np.zeros`` takes anything under glibc's mmap threshold (8 MiB in a live agent,
    ``agent.runtime.memory.compact_allocator``) from the heap, where ``calloc`` clears a reused
    block by writing it: the pipeline's tables held 1.6 MiB on an idle link (0.6 MiB now) and
    2.2 MiB after 10 s at 100k packets/s (1.2 MiB now). A private anonymous mapping is the
    kernel's zero page until a row is written, so a table on a quiet link costs what it uses
    (rows are handed out from the lowest, ``agent.base.slots``). Copy-on-write across a fork,
    as the heap is. Small tables stay on the heap.

    >>> t = table((1024, 2), np.int64)
    >>> t.shape, t.dtype.name, int(t.sum()), t.flags.writeable
    ((1024, 2), 'int64', 0, True)
    """
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    size = math.prod(dims) * dt.itemsize
    if size < LAZY_BYTES:
        return np.zeros(dims, dt)
    pages = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(pages, dt).reshape(dims)


def unique(values: npt.NDArray[T]) -> npt.NDArray[T]:
    """The distinct values, sorted."""
    if values.size < 2:
        return values.copy()
    s = np.sort(values)
    keep = np.empty(s.size, np.bool_)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def _sorted_runs(values: npt.NDArray[T]) -> tuple[npt.NDArray[np.intp], npt.NDArray[T], npt.NDArray[np.bool_]]:
    """The stable sort order, the sorted values, and True where a run of equal values starts."""
    order = np.argsort(values, kind="stable")
    s = values[order]
    keep = np.empty(s.size, np.bool_)
    if s.size:
        keep[0] = True
        np.not_equal(s[1:], s[:-1], out=keep[1:])
    return order, s, keep


def unique_first(values: npt.NDArray[T]) -> tuple[npt.NDArray[T], npt.NDArray[np.intp]]:
    """The distinct values, sorted, and the position of each one's first occurrence."""
    order, s, keep = _sorted_runs(values)
    return s[keep], order[keep]


def unique_inverse(
    values: npt.NDArray[T],
) -> tuple[npt.NDArray[T], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The distinct values (sorted), each one's first position, and for every value its index among them."""
    order, s, keep = _sorted_runs(values)
    inverse = np.empty(s.size, np.intp)
    inverse[order] = np.cumsum(keep) - 1
    return s[keep], order[keep], inverse
