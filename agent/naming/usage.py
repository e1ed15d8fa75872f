"""Traffic per device and per remote domain, with every label set bounded by a budget.

``TopN`` keeps a series for at most ``budget`` names — the busiest by recent traffic — and
counts everything else as ``other``. Every ``interval`` of packet time it re-ranks: series
quiet past ``ttl`` are dropped, free series go to the busiest names in ``other``, and a name
far busier than the weakest series takes its place. Each drop is counted. A name's traffic
before it got a series stays in ``other``, so every counter only ever grows.

Names are interned to small integers (``Interner``, bounded too), so a batch is accounted with
a few ``bincount`` calls over integer columns.

>>> top = TopN(budget=2, ttl_us=600_000_000)
>>> [top.names.intern(n) for n in ("tv", "nas", "pi")]
[2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from agent.base.arrays import table
from agent.base.batch import I64
from agent.config import DevicesConfig
from agent.naming.interner import OTHER, UNNAMED, Interner

TX_BYTES, RX_BYTES, TX_PACKETS, RX_PACKETS = range(4)


class TopN:
    def __init__(self, budget: int, ttl_us: int, *, interval_us: int = 60_000_000, capacity: int = 4096, fixed: tuple[str, str] = ("other", "unnamed")) -> None:
        self.budget, self.ttl_us, self.interval_us = budget, ttl_us, interval_us
        self.names = Interner(capacity, fixed)
        self.recent = table(capacity, np.float64)  # bytes since the last re-ranking, per name id
        self.last_active = table(capacity, np.int64)
        self.series_of = table(capacity, np.int64)  # name id -> series id (0: 'other')
        self.series_of[UNNAMED] = 1
        # Series 0 is 'other' and 1 'unnamed'; 2.. are names'. Totals per series, per measure.
        self.totals = np.zeros((budget + 2, 4), np.float64)
        self.series_name: list[int | None] = [OTHER, UNNAMED] + [None] * budget
        # Packet time each series was given (-1: given while counting a batch, its time set by the
        # batch's ``touch``). A series is outranked only once it has held its place a whole
        # interval: a first batch that spans the early names and busier later ones (a live batch
        # is up to a second) must not churn at once.
        self.given_at = np.zeros(budget + 2, np.int64)
        self.dropped = 0
        self._next_rank: int | None = None
        self._free_series = list(range(2, budget + 2))

    @property
    def off(self) -> bool:
        """A budget of 0 turns the label's series off: nothing is counted or shown."""
        return self.budget == 0

    def add(self, name_ids: I64, measure_bytes: int, sizes: np.ndarray, scale: float) -> None:
        """Count packets (``sizes`` bytes each) of ``name_ids`` under measure TX_BYTES or RX_BYTES."""
        if name_ids.size == 0 or self.off:
            return
        np.add.at(self.recent, name_ids, sizes)
        series = self._series_for(name_ids)
        k = self.totals.shape[0]
        octets: np.ndarray = np.bincount(series, weights=sizes, minlength=k)
        packets: np.ndarray = np.bincount(series, minlength=k)
        if scale != 1.0:  # unsampled traffic (the default) needs no scaling: x * 1.0 is x
            octets, packets = octets * scale, packets * scale
        self.totals[:, measure_bytes] += octets
        self.totals[:, measure_bytes + 2] += packets

    def add_totals(self, name_ids: I64, values: np.ndarray) -> None:
        """Count ready-made amounts: row i of ``values`` is [tx bytes, rx bytes, tx packets, rx packets] of ``name_ids[i]``."""
        if name_ids.size == 0 or self.off:
            return
        np.add.at(self.recent, name_ids, values[:, TX_BYTES] + values[:, RX_BYTES])
        series = self._series_for(name_ids)
        k = self.totals.shape[0]
        for measure in range(4):
            self.totals[:, measure] += np.bincount(series, weights=values[:, measure], minlength=k)

    def _series_for(self, name_ids: I64) -> I64:
        series = self.series_of[name_ids]
        if self._free_series and not series.all():
            # While the budget has room, a new name gets its series at once rather than at the next
            # ranking: in the order the names first appear, so how packets were cut into batches
            # (a live batch spans up to a second) does not change who came first.
            new = name_ids[(series == OTHER) & (name_ids > UNNAMED)]
            ids, first = np.unique(new, return_index=True)
            for name in ids[np.argsort(first, kind="stable")].tolist():
                if not self._free_series:
                    break
                self._give(self._free_series.pop(0), name)
            series = self.series_of[name_ids]
        return series

    def touch(self, name_ids: I64, now: int) -> None:
        self.given_at[self.given_at < 0] = now
        if name_ids.size:
            self.last_active[name_ids] = now

    def maybe_rerank(self, now: int) -> bool:
        """Re-rank once per interval of packet time; True when the series changed."""
        if self._next_rank is None:
            self._next_rank = now  # the first batch ranks at once, so early names get series
        if now < self._next_rank:
            return False
        self._next_rank = now + self.interval_us
        return self.rerank(now)

    def rerank(self, now: int) -> bool:
        if self.off:
            return False
        changed = self._rank(now)
        self._free_series = [s for s in range(2, self.totals.shape[0]) if self.series_name[s] is None]
        return changed

    def _rank(self, now: int) -> bool:
        changed = False
        held = [s for s in range(2, self.totals.shape[0]) if self.series_name[s] is not None]
        for s in held:  # quiet past the TTL: the series goes
            name = self.series_name[s]
            assert name is not None
            if now - self.last_active[name] > self.ttl_us:
                self._drop(s)
                changed = True
        live = ((self.series_of == OTHER) & (self.recent > 0)).nonzero()[0]
        live = live[live > UNNAMED]
        candidates = live[np.argsort(-self.recent[live], kind="stable")]
        for name in candidates.tolist():
            free = [s for s in range(2, self.totals.shape[0]) if self.series_name[s] is None]
            if free:
                self._give(free[0], name, now)
                changed = True
                continue
            owners = [(self.recent[self.series_name[s]], s) for s in range(2, self.totals.shape[0]) if now - self.given_at[s] >= self.interval_us]
            if not owners:
                break  # every series is new: none has held its place long enough to lose it
            weakest, slot = min(owners)
            if self.recent[name] > 2 * weakest:  # far busier: take the weakest series' place
                self._drop(slot)
                self._give(slot, name, now)
                changed = True
            else:
                break
        self.recent *= 0.5  # recent traffic decays: a name must keep being busy to keep its place
        return changed

    def prune(self, keep: Iterable[int] = ()) -> None:
        """Release every name id that holds no series and is not in ``keep``: the interner never fills for good."""
        held = {n for n in self.series_name if n is not None}
        used = held | set(keep)
        gone = [i for i, name in enumerate(self.names.names) if name is not None and i > UNNAMED and i not in used]
        self.names.release(gone)
        self.recent[gone] = 0.0

    def _give(self, slot: int, name: int, now: int = -1) -> None:
        self.series_name[slot] = name
        self.series_of[name] = slot
        self.totals[slot] = 0.0
        self.given_at[slot] = now

    def _drop(self, slot: int) -> None:
        name = self.series_name[slot]
        if name is not None:
            self.series_of[name] = OTHER
        self.series_name[slot] = None
        self.totals[slot] = 0.0
        self.dropped += 1

    def series(self) -> list[tuple[str, list[float]]]:
        """(label value, [tx bytes, rx bytes, tx packets, rx packets]) of every series held (none when off)."""
        out: list[tuple[str, list[float]]] = []
        if self.off:
            return out
        for s, name in enumerate(self.series_name):
            if name is not None:
                label = self.names.names[name]
                if label is not None:
                    out.append((label, self.totals[s].tolist()))
        return out


def budgets(config: DevicesConfig, *, workers: int = 0) -> tuple[TopN, TopN]:
    """The device and the domain series budgets a config asks for.

    With ``workers``, the budgets of a worker pool's parent: room for every name the workers may
    hold a series for at once, and the names ranked against them, rather than every name there is.
    """
    ttl_us, rank_us = int(config.series_ttl_seconds * 1e6), int(config.series_rank_seconds * 1e6)

    def top(budget: int, most: int, fixed: tuple[str, str]) -> TopN:
        capacity = min(most, workers * budget * 4) if workers else most
        return TopN(budget, ttl_us, interval_us=rank_us, capacity=capacity + 2, fixed=fixed)

    return top(config.series_budget, config.max_devices, ("other", "unnamed")), top(
        config.domain_series_budget, config.max_domain_addresses, ("other", "unknown")
    )


class MergedUsage:
    """Several workers' series of one label, added up under one budget.

    Each worker's ``TopN`` series only grow while they exist, so the parent takes the growth of
    each since the last look and counts it into a ``TopN`` of its own: the merged label keeps
    its budget however many workers there are, and every merged counter only ever grows.

    >>> merged = MergedUsage(TopN(budget=1, ttl_us=600_000_000))
    >>> merged.update(0, [("tv", [100.0, 0.0, 1.0, 0.0])], now=1)
    >>> merged.update(1, [("nas", [50.0, 0.0, 1.0, 0.0])], now=1)
    >>> merged.top.series()
    [('other', [50.0, 0.0, 1.0, 0.0]), ('unnamed', [0.0, 0.0, 0.0, 0.0]), ('tv', [100.0, 0.0, 1.0, 0.0])]
    """

    def __init__(self, top: TopN) -> None:
        self.top = top
        self._last: dict[int, dict[str, np.ndarray]] = {}  # worker -> its series' totals at the last look

    def update(self, worker: int, series: Iterable[tuple[str, Iterable[float]]], now: int) -> None:
        last = self._last.get(worker, {})
        seen: dict[str, np.ndarray] = {}
        names: list[int] = []
        growth: list[np.ndarray] = []
        for name, values in series:
            current = np.asarray(list(values), np.float64)
            before = last.get(name)
            # A series the worker dropped and gave again since the last look starts from zero.
            delta = current if before is None or (current < before).any() else current - before
            seen[name] = current
            if delta.any():
                names.append(self.top.names.intern(name))
                growth.append(delta)
        self._last[worker] = seen
        if names:
            ids = np.asarray(names, np.int64)
            self.top.add_totals(ids, np.vstack(growth))
            self.top.touch(ids, now)
        self.top.maybe_rerank(now)
        if len(self.top.names) > 0.9 * self.top.names.capacity:
            self.top.prune()
