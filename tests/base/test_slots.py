"""Free rows of a fixed-size table: given-back rows first (last first), then never-used ones, never more than the capacity."""

from __future__ import annotations

import numpy as np
import pytest

from agent.base.slots import FreeSlots


def test_the_order_rows_come_back_in_is_the_order_of_a_full_stack() -> None:
    """The same rows, in the same order, as a stack that started out holding every row (the code it replaced)."""
    free, stack = FreeSlots(100), list(range(99, -1, -1))
    rng = np.random.default_rng(7)
    held: list[int] = []
    for _ in range(500):
        if held and rng.random() < 0.45:
            back = np.array(held[: rng.integers(1, len(held) + 1)], np.int64)
            held = held[back.size :]
            free.give(back)
            stack.extend(back.tolist())
        else:
            n = int(rng.integers(0, len(stack) + 1))
            got = free.take(n).tolist()
            assert got == [stack.pop() for _ in range(n)]
            held += got
        assert len(free) == len(stack)


def test_taking_more_than_is_free_is_refused() -> None:
    free = FreeSlots(4)
    free.take(3)
    with pytest.raises(ValueError, match="2 rows asked for, 1 free"):
        free.take(2)


def test_a_table_on_a_quiet_link_holds_no_stack() -> None:
    free = FreeSlots(1 << 20)
    assert free.take(10).tolist() == list(range(10))
    assert free._stack.nbytes == 0
    free.give(np.arange(10, dtype=np.int64))
    assert free._stack.size == 64 and len(free) == 1 << 20
