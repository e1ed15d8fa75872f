"""Several processes on one interface: PACKET_FANOUT_HASH spreads flows over N capture handles.

``WorkerPool`` opens N live handles per interface, each joined to that interface's fanout
group (the kernel hashes each flow, both directions, to one handle), and forks one worker
process per set of handles. Every worker runs its own engine and pipeline; the parent asks
each for its snapshot and adds them up, so ``/metrics`` shows one agent with no double
counting. Names learned by one worker (a DHCP or DNS packet lands on one of them) are passed
through the parent to the others, so every worker labels traffic the same way.

>>> # pool = WorkerPool(config, ["eth0"], 2); pool.start(); pool.snapshot(); pool.close()
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent.capture import Source
from agent.config import Config
from agent.engine import Engine
from agent.learn import Observations
from agent.pipeline import Pipeline
from agent.registry import Device
from agent.snapshot import Snapshot, UsageSeries
from agent.usage import MergedUsage, TopN

log = logging.getLogger("pktagent.workers")


class WorkerPool:
    def __init__(self, config: Config, interfaces: Sequence[str], workers: int, known_devices: Sequence[Device] = ()) -> None:
        from agent.app import open_live

        self.config, self.interfaces, self.n = config, list(interfaces), workers
        base = (os.getpid() * 16) & 0xFFFF  # fanout group ids, one per interface, private to this agent

        def open_handle(iface: int, worker: int) -> Source:
            return open_live(config, self.interfaces, iface, fanout_group=(base + iface) & 0xFFFF)

        self._open = open_handle
        # Every handle is opened here, before any fork: a mistake is one error, before anything runs.
        self._sources = [[open_handle(i, w) for i in range(len(self.interfaces))] for w in range(workers)]
        self._known = list(known_devices)
        self._conns: list[Any] = []
        self._procs: list[Any] = []
        self._lock = threading.Lock()
        self.observations: list[tuple[Observations, int]] = []  # learned by the workers (and when), for the parent's store
        self._devices, self._domains = merged_usage(config, workers)

    def adopt_devices(self, known_devices: Sequence[Device]) -> None:
        """Devices an earlier run learned, for every worker to start from (before ``start``)."""
        self._known = list(known_devices)

    def start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        for w in range(self.n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=self._worker, args=(w, child, parent), daemon=True, name=f"worker-{w}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for sources in self._sources:
            for src in sources:
                src.close()  # the worker holds its own copy of each handle

    def pids(self) -> list[int]:
        """The worker processes' ids (for the agent's memory)."""
        return [p.pid for p in self._procs if p.pid is not None]

    def snapshot(self) -> Snapshot:
        """Every worker's snapshot, added up; learned names are passed on to the other workers on the way."""
        with self._lock:
            for conn in self._conns:
                conn.send(("snapshot",))
            snaps: list[Snapshot] = []
            learned: list[tuple[int, Observations, int]] = []
            for w, conn in enumerate(self._conns):
                snap, obs, now = conn.recv()
                snaps.append(snap)
                learned.extend((w, o, now) for o in obs)
            for source, obs, now in learned:
                self.observations.append((obs, now))
                for w, conn in enumerate(self._conns):
                    if w != source:
                        conn.send(("learn", obs, now))
        total = snaps[0]
        for s in snaps[1:]:
            total = total.merge(s)
        # Per-device and per-domain series: one budget for the agent, not one per worker.
        now = int(max(float(np.max(s.last_packet_seconds, initial=0.0)) for s in snaps) * 1e6)  # packet time, as the workers rank by
        for w, s in enumerate(snaps):
            self._devices.update(w, ((u.name, u.values()) for u in s.device_series), now)
            self._domains.update(w, ((u.name, u.values()) for u in s.domain_series), now)
        return total.replace(
            device_series=tuple(UsageSeries(name, *v) for name, v in self._devices.top.series()),
            domain_series=tuple(UsageSeries(name, *v) for name, v in self._domains.top.series()),
            series_dropped={"device": self._devices.top.dropped, "domain": self._domains.top.dropped},
            series_budget={"device": self._devices.top.budget, "domain": self._domains.top.budget},
        )

    def reconfigure(self, config: Config, keys: Sequence[str]) -> None:
        with self._lock:
            for conn in self._conns:
                conn.send(("reload", config, list(keys)))

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
            for proc in self._procs:
                proc.join(3.0)
                if proc.is_alive():
                    proc.terminate()
            for conn in self._conns:
                conn.close()

    # -- in a worker ----------------------------------------------------------------------

    def _worker(self, w: int, conn: Any, parent_end: Any) -> None:
        # Only the parent may hold the parent's ends of the pipes: then a parent that dies, even
        # by SIGKILL, closes them all, and every worker reads EOF and stops.
        parent_end.close()
        for other in self._conns:
            other.close()
        pipeline = Pipeline(self.config, self.interfaces, self._known)
        pending: list[Observations] = []
        last_now = [0]

        def learned(obs: Observations, now: int) -> None:
            pending.append(obs)
            last_now[0] = now

        pipeline.on_learn = learned
        sources = self._sources[w]

        def opener(i: int) -> Source:
            if sources[i] is not None:
                src, sources[i] = sources[i], None  # type: ignore[call-overload]
                return src
            return self._open(i, w)

        engine = Engine(
            pipeline,
            opener,
            batch_size=self.config.pipeline.batch_size,
            window=self.config.pipeline.batch_window_ms / 1000,
            queue_capacity=self.config.pipeline.queue_capacity_packets,
            queue_bytes=self.config.pipeline.queue_capacity_bytes,
            blocking=False,
        )
        engine.open_all()
        engine.start()
        try:
            while True:
                message = conn.recv()
                if message[0] == "snapshot":
                    snap = engine.snapshot()
                    conn.send((snap.replace(extra={}), pending[:], last_now[0]))
                    pending.clear()
                elif message[0] == "learn":
                    pipeline.apply_observations(message[1], message[2])
                elif message[0] == "reload":
                    pipeline.reconfigure(message[1], message[2])
                elif message[0] == "stop":
                    break
        except (EOFError, OSError, KeyboardInterrupt):
            pass
        finally:
            engine.close()


def merged_usage(config: Config, workers: int) -> tuple[MergedUsage, MergedUsage]:
    """The parent's device and domain series: the budgets of one agent, fed by every worker."""
    d = config.devices
    ttl_us, rank_us = int(d.series_ttl_seconds * 1e6), int(d.series_rank_seconds * 1e6)

    def top(budget: int, most: int, fixed: tuple[str, str]) -> TopN:
        # Room for every name the workers may hold a series for at once, and the names ranked against them.
        return TopN(budget, ttl_us, interval_us=rank_us, capacity=min(most, workers * budget * 4) + 2, fixed=fixed)

    return (
        MergedUsage(top(d.series_budget, d.max_devices, ("other", "unnamed"))),
        MergedUsage(top(d.domain_series_budget, d.max_domain_addresses, ("other", "unknown"))),
    )
