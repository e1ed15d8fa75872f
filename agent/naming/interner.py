"""Names to small integer ids and back, bounded: what lets a batch count per-name traffic with ``bincount``.

>>> names = Interner(4, ("other", "unnamed"))
>>> names.intern("tv"), names.intern("nas"), names.intern("tv")
(2, 3, 2)
"""

from __future__ import annotations

OTHER, UNNAMED = 0, 1  # fixed ids: 'other' (over budget) and 'unnamed'/'unknown' (no name known)


class Interner:
    """Names to small integer ids and back, at most ``capacity`` of them (the oldest unused go first)."""

    def __init__(self, capacity: int, fixed: tuple[str, str]) -> None:
        self.capacity = capacity
        self.names: list[str | None] = [*fixed]
        self._ids: dict[str, int] = {n: i for i, n in enumerate(fixed)}
        self._free: list[int] = []
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._ids)

    def intern(self, name: str) -> int:
        found = self._ids.get(name)
        if found is not None:
            return found
        if self._free:
            i = self._free.pop()
            self.names[i] = name
        elif len(self.names) < self.capacity:
            i = len(self.names)
            self.names.append(name)
        else:
            self.evictions += 1
            return OTHER  # full: counted as 'other' until a name is released
        self._ids[name] = i
        return i

    def release(self, ids: list[int]) -> None:
        for i in ids:
            name = self.names[i]
            if i > UNNAMED and name is not None:
                del self._ids[name]
                self.names[i] = None
                self._free.append(i)
