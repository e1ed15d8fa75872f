"""Sampling: a share of packets kept, counters scaled to stay unbiased, the rest counted."""

from __future__ import annotations

import numpy as np
import pcapgen as g
import pytest
from batches import raw

from agent.config import Config
from agent.runtime.pipeline import Pipeline
from agent.stages.sample import Sampler


def test_rate_one_keeps_everything() -> None:
    cfg = Config()
    p = Pipeline(cfg, ["eth0"])
    frames = [g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(i, 53)) for i in range(1000)]
    p.process(raw(frames))
    c = p.counters
    assert (int(c.processed[0]), int(c.sampled_out[0]), float(c.traffic_packets.sum())) == (1000, 0, 1000.0)


def test_half_rate_is_unbiased_and_accounted() -> None:
    cfg = Config().replace("pipeline", sampling_rate=0.5)
    p = Pipeline(cfg, ["eth0"])
    frames = [g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(i % 60000, 53, i.to_bytes(4, "big"))) for i in range(20000)]
    p.process(raw(frames))
    c = p.counters
    kept, out = int(c.processed[0]), int(c.sampled_out[0])
    assert kept + out == 20000
    assert float(c.traffic_packets.sum()) == kept * 2.0
    assert float(c.traffic_bytes.sum()) == pytest.approx(sum(len(f) for f in frames), rel=0.03)
    assert abs(kept - 10000) < 300  # ~3 standard deviations of a fair coin over 20k packets
    # The same packets are kept on every run.
    again = Pipeline(cfg, ["eth0"])
    again.process(raw(frames))
    assert int(again.counters.processed[0]) == kept


def test_duplicates_are_not_also_sampled_out() -> None:
    s = Sampler(0.01)
    from batches import decoded

    b = decoded([g.eth(g.ETH_IPV4) + g.ipv4(g.UDP, "10.0.0.1", "10.0.0.2", g.udp(1, 2))] * 2)
    b = b.replace(duplicate=np.array([True, True]))
    assert not s.apply(b, np.arange(2, dtype=np.uint64)).sampled_out.any()


def test_rate_is_checked() -> None:
    with pytest.raises(ValueError, match="sampling rate"):
        Sampler(0.0)
