"""Several processes on one interface: PACKET_FANOUT_HASH spreads flows over N capture handles.

``WorkerPool`` opens N live handles per interface, each joined to that interface's fanout
group (the kernel hashes each flow, both directions, to one handle), and forks one worker
process per set of handles. Every worker runs its own engine and pipeline; the parent asks
each for its snapshot and adds them up, so ``/metrics`` shows one agent with no double
counting. Names learned by one worker (a DHCP or DNS packet lands on one of them) are passed
through the parent to the others, so every worker labels traffic the same way.

>>> # pool = WorkerPool(config, ["eth0"], 2); pool.start(); pool.snapshot(empty=engine.snapshot); pool.close()
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection  # imported now, as root may be all that can read the interpreter's library
import multiprocessing.popen_fork
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agent.base.snapshot import Snapshot, UsageSeries
from agent.capture import Source
from agent.config import Config
from agent.naming.learn import Observations
from agent.naming.registry import Device
from agent.naming.usage import MergedUsage, budgets
from agent.runtime.engine import live_engine
from agent.runtime.pipeline import Pipeline
from agent.runtime.sources import open_live

log = logging.getLogger("pktagent.workers")


class WorkerPool:
    def __init__(self, config: Config, interfaces: Sequence[str], workers: int, known_devices: Sequence[Device] = ()) -> None:
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
        self._inherited: list[Any] = []
        self.timeout = config.capture.worker_timeout_seconds
        self._failed: set[int] = set()
        self.failure: str | None = None  # why a worker failed, once one has
        self._last: Snapshot | None = None
        self.observations: list[tuple[Observations, int]] = []  # learned by the workers (and when), for the parent's store
        self._devices, self._domains = merged_usage(config, workers)

    def adopt_devices(self, known_devices: Sequence[Device]) -> None:
        """Devices an earlier run learned, for every worker to start from (before ``start``)."""
        self._known = list(known_devices)

    def start(self, inherited: Sequence[Any] = ()) -> None:
        """Fork the workers (before any thread starts); ``inherited``: objects of the parent each worker closes."""
        ctx = multiprocessing.get_context("fork")
        self._inherited = list(inherited)
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

    def take_observations(self) -> list[tuple[Observations, int]]:
        """What the workers learned since the last call (and when), for the parent's registry and store."""
        with self._lock:
            taken, self.observations = self.observations, []
        return taken

    def pids(self) -> list[int]:
        """The worker processes' ids (for the agent's memory)."""
        return [p.pid for p in self._procs if p.pid is not None]

    def snapshot(self, empty: Callable[[], Snapshot]) -> Snapshot:
        """Every worker's snapshot, added up; learned names are passed on to the other workers on the way.

        A worker that has died, or does not answer within ``capture.worker_timeout_seconds``, is
        failed for good: ``failure`` says which, and every capture shows down (the agent then stops,
        for its service manager to start it again). ``empty()``: the figures of an agent that has
        counted nothing, shown when no worker has ever answered.
        """
        with self._lock:
            live = [w for w in range(self.n) if w not in self._failed]
            for w in live:
                self._ask(w, ("snapshot",))
            snaps: list[Snapshot] = []
            answered: list[int] = []
            learned: list[tuple[int, Observations, int]] = []
            for w in live:
                answer = self._answer(w)
                if answer is not None:
                    snap, obs, now = answer
                    snaps.append(snap)
                    answered.append(w)
                    learned.extend((w, o, now) for o in obs)
            for source, obs, now in learned:
                self.observations.append((obs, now))
                for w in range(self.n):
                    if w != source and w not in self._failed:
                        self._ask(w, ("learn", obs, now))
            if not snaps:
                return self._down(self._last or empty())
        total = snaps[0]
        for s in snaps[1:]:
            total = total.merge(s)
        self._last = total
        if self.failure is not None:
            total = self._down(total)
        # Per-device and per-domain series: one budget for the agent, not one per worker.
        now = int(max(float(np.max(s.last_packet_seconds, initial=0.0)) for s in snaps) * 1e6)  # packet time, as the workers rank by
        for w, s in zip(answered, snaps):
            self._devices.update(w, ((u.name, u.values()) for u in s.device_series), now)
            self._domains.update(w, ((u.name, u.values()) for u in s.domain_series), now)
        return total.replace(
            device_series=tuple(UsageSeries(name, *v) for name, v in self._devices.top.series()),
            domain_series=tuple(UsageSeries(name, *v) for name, v in self._domains.top.series()),
            series_dropped={"device": self._devices.top.dropped, "domain": self._domains.top.dropped},
            series_budget={"device": self._devices.top.budget, "domain": self._domains.top.budget},
        )

    def _ask(self, w: int, message: tuple[Any, ...]) -> None:
        try:
            self._conns[w].send(message)
        except OSError:
            self._fail(w, "exited")

    def _answer(self, w: int) -> Any:
        conn = self._conns[w]
        try:
            if not conn.poll(self.timeout):
                self._fail(w, f"has not answered for {self.timeout:g} s (hung or stopped)")
                return None
            return conn.recv()
        except (EOFError, OSError):
            self._fail(w, "exited")
            return None

    def _fail(self, w: int, what: str) -> None:
        if w in self._failed:
            return
        proc = self._procs[w]
        proc.join(0.1)
        code = proc.exitcode
        if code is not None:
            what = f"exited ({f'signal {-code}' if code < 0 else f'status {code}'})"
        message = f"capture worker {w + 1} of {self.n} {what}: stopping the agent, for its service manager to start it again"
        log.error("%s", message)
        self._failed.add(w)
        if self.failure is None:
            self.failure = message

    def _down(self, snap: Snapshot) -> Snapshot:
        """``snap`` with every capture down and the failure as its error."""
        n = len(self.interfaces)
        return snap.replace(capture_up=np.zeros(n, np.int64), capture_errors=(self.failure or "",) * n)

    def reconfigure(self, config: Config, keys: Sequence[str]) -> None:
        with self._lock:
            for w in range(self.n):
                if w not in self._failed:
                    self._ask(w, ("reload", config, list(keys)))

    def close(self, within: float = 1.5) -> None:
        """Stop every worker: asked to, then killed if it has not stopped ``within`` seconds (a stopped or hung one never will)."""
        deadline = time.monotonic() + within
        # A scrape may be waiting for a hung worker with the lock held: then the workers are not asked, only killed.
        locked = self._lock.acquire(timeout=within / 2)
        try:
            for conn in self._conns if locked else ():
                with contextlib.suppress(OSError):
                    conn.send(("stop",))
            for proc in self._procs:
                proc.join(max(0.0, deadline - time.monotonic()))
            for proc in self._procs:
                if proc.is_alive():
                    proc.kill()  # SIGKILL: SIGTERM waits for ever on a stopped process
                    proc.join(1.0)
            for conn in self._conns:
                conn.close()
        finally:
            if locked:
                self._lock.release()

    # -- in a worker ----------------------------------------------------------------------

    def _worker(self, w: int, conn: Any, parent_end: Any) -> None:
        # Only the parent may hold the parent's ends of the pipes: then a parent that dies, even
        # by SIGKILL, closes them all, and every worker reads EOF and stops.
        parent_end.close()
        for other in self._conns:
            other.close()
        # Nor may a worker keep the other workers' packet sockets: a fanout group lives as long as
        # any of its sockets, and one left on a deleted interface refuses the handles of the
        # interface made again in its place (EINVAL), so the capture would never come back.
        for v, sources in enumerate(self._sources):
            if v != w:
                for src in sources:
                    src.close()
        for obj in self._inherited:  # the parent's listening socket, and the like
            with contextlib.suppress(OSError):
                obj.close()
        pipeline = Pipeline(self.config, self.interfaces, self._known, host_local=True)  # workers capture live
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

        # The interface's counters are the whole interface's: one worker counts its gaps.
        engine = live_engine(pipeline, opener, self.config, interface_gaps=w == 0)
        engine.open_all()
        engine.start()
        try:
            while True:
                message = conn.recv()
                if message[0] == "snapshot":
                    snap = engine.snapshot()
                    conn.send((snap, pending[:], last_now[0]))
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
    devices, domains = budgets(config.devices, workers=workers)
    return MergedUsage(devices), MergedUsage(domains)
