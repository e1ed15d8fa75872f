"""Tables sized to their bound take memory only for the pages written, whatever the heap held before."""

from __future__ import annotations

import numpy as np
from pagemap import resident_pages

from agent.base.arrays import LAZY_BYTES, table
from agent.stages.flows import FlowTable


def test_a_table_is_resident_only_where_written() -> None:
    # A heap that has held (and cleared) big blocks: np.zeros would clear a reused one by writing it.
    for _ in range(4):
        junk = np.ones(600_000, np.uint8)
        del junk
    t = table((65_536, 2), np.int64)  # a flow table's packet counts: 1 MiB
    assert (t.shape, t.dtype, resident_pages(t)) == ((65_536, 2), np.dtype(np.int64), 0)
    t[:300] = 1  # 300 rows of 16 bytes: the first two pages
    t[40_000, 1] = 7
    assert resident_pages(t) == 3
    assert int(t.sum()) == 607


def test_small_tables_stay_on_the_heap() -> None:
    small = table(LAZY_BYTES // 8 - 1, np.int64)
    assert small.base is None and not small.any()


def test_a_quiet_flow_table_costs_a_few_pages_not_its_bound() -> None:
    flows = FlowTable(max_flows=65_536, idle_us=60_000_000, active_us=1_800_000_000, linger_us=2_000_000)
    big = [flows.key, flows.first_ts, flows.last_ts, flows.close_ts, flows.packets, flows.bytes, flows.flags, flows.used, flows.transport, flows.closing]
    assert sum(a.nbytes for a in big) == 65_536 * (8 * 4 + 16 * 2 + 2 + 3)
    assert sum(resident_pages(a) for a in big) == 0
