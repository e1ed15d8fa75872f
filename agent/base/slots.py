"""Free slot numbers of a fixed-size table, taken and given back in whole arrays.

A table sized to its bound (65,536 flows, 16,384 domain addresses) needs to know which of its
rows are free. A stack holding every free row number costs its whole size in memory from the
start; here rows never used yet are only a counter, and the stack holds just the rows given
back, so a table on a quiet link costs what it uses. Rows given back are taken again first,
the last given back first, then never-used ones in order.

>>> free = FreeSlots(6)
>>> free.take(3).tolist()
[0, 1, 2]
>>> free.give(np.array([1, 0]))
>>> free.take(3).tolist(), len(free)
([0, 1, 3], 2)
"""

from __future__ import annotations

import numpy as np

from agent.base.batch import I64


class FreeSlots:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._fresh = 0  # rows from here on were never taken
        self._stack: I64 = np.zeros(0, np.int64)  # rows given back; the top is at the end
        self._top = 0

    def __len__(self) -> int:
        """Rows free now."""
        return self.capacity - self._fresh + self._top

    def take(self, n: int) -> I64:
        """``n`` free rows (at most ``len(self)``)."""
        if n > len(self):
            raise ValueError(f"{n} rows asked for, {len(self)} free")
        again = min(n, self._top)
        reused = self._stack[self._top - again : self._top][::-1].copy()  # the stack's places are reused by the next give
        self._top -= again
        fresh = np.arange(self._fresh, self._fresh + n - again, dtype=np.int64)
        self._fresh += n - again
        return np.concatenate((reused, fresh)) if again else fresh

    def give(self, rows: I64) -> None:
        """Rows free again (each taken, and given back once)."""
        need = self._top + rows.size
        if need > self._stack.size:
            grown = np.zeros(min(self.capacity, max(need, 2 * self._stack.size, 64)), np.int64)
            grown[: self._top] = self._stack[: self._top]
            self._stack = grown
        self._stack[self._top : need] = rows
        self._top = need
