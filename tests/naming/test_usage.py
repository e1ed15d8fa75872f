"""Series budgets: a series holds its place a whole ranking interval before a busier name may take it."""

from __future__ import annotations

import numpy as np

from agent.naming.usage import TX_BYTES, TopN

INTERVAL = 60_000_000  # us


def count(top: TopN, names: list[str], sizes: list[float], now: int) -> None:
    ids = np.array([top.names.intern(n) for n in names], np.int64)
    top.add(ids, TX_BYTES, np.array(sizes), 1.0)
    top.touch(ids, now)
    top.maybe_rerank(now)


def named_series(top: TopN) -> list[str]:
    return sorted(name for name, _ in top.series() if name not in ("other", "unnamed"))


def test_a_first_batch_with_early_and_busier_names_does_not_churn() -> None:
    # One batch (a live batch spans up to a second) holds the quiet early names and busier later ones.
    top = TopN(budget=2, ttl_us=10 * INTERVAL, interval_us=INTERVAL)
    count(top, ["a", "b", "c", "d"], [18, 18, 1000, 1000], now=0)
    assert named_series(top) == ["a", "b"] and top.dropped == 0  # the first names took the room; nothing outranked yet
    count(top, ["a", "b", "c", "d"], [18, 18, 1000, 1000], now=INTERVAL // 2)
    assert top.dropped == 0  # no ranking between intervals
    count(top, ["a", "b", "c", "d"], [18, 18, 1000, 1000], now=INTERVAL)
    assert named_series(top) == ["c", "d"] and top.dropped == 2  # held a whole interval: now outranked, each drop counted


def test_a_series_given_at_a_ranking_is_safe_until_the_next() -> None:
    top = TopN(budget=1, ttl_us=10 * INTERVAL, interval_us=INTERVAL)
    count(top, ["a"], [10], now=0)
    count(top, ["b"], [1000], now=INTERVAL)  # b outranks a at the ranking
    assert named_series(top) == ["b"] and top.dropped == 1
    count(top, ["c"], [1_000_000], now=INTERVAL + 1)  # far busier, but between rankings
    count(top, ["c"], [1_000_000], now=2 * INTERVAL)  # b has held its place an interval: c takes it
    assert named_series(top) == ["c"] and top.dropped == 2


def test_room_goes_to_names_in_the_order_they_first_appear() -> None:
    top = TopN(budget=2, ttl_us=10 * INTERVAL, interval_us=INTERVAL)
    for name in ("z", "y", "x"):  # interned first: their ids run against the order they will talk in
        top.names.intern(name)
    count(top, ["x", "x", "y", "z"], [10, 10, 10, 10], now=0)
    assert named_series(top) == ["x", "y"]
