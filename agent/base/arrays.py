"""Small array helpers that the hot path needs faster than numpy's general versions.

``np.unique`` in numpy 2.3+ goes through a hash table that costs ~100 us even for a hundred
integers; a sort and a comparison do the same job in a few microseconds.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T", bound=np.generic)


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
