"""The running agent: captures, pipeline, ``/metrics`` server and OTLP export, started and stopped together.

``pktagent run`` is ``Agent(config).serve()``; tests build an ``Agent`` in-process the same way.

>>> # agent = Agent(config); agent.start(); ...; agent.stop()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent import build_labels
from agent import config as config_mod
from agent._exceptions import ConfigError, PktagentError
from agent.capture import Source
from agent.config import Config
from agent.engine import Engine
from agent.health import health
from agent.pipeline import Pipeline
from agent.snapshot import Snapshot

log = logging.getLogger("pktagent")


def default_route_interface(route_table: str = "/proc/net/route") -> str:
    """The interface of the IPv4 default route, for capturing when no interface is named."""
    try:
        with open(route_table) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return fields[0]
    raise ConfigError("there is no default route to find an interface by: name one with --interface IFACE (see `ip link`)")


def otlp_enabled(config: config_mod.OtlpConfig, environ: Mapping[str, str] = os.environ) -> bool:
    """On when the config says so or the standard endpoint variables are set (and the SDK is not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return config.enabled or bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))


def agent_memory(pids: Sequence[int], proc: str = "/proc") -> dict[str, int]:
    """Resident and peak resident bytes of the agent's processes (this one and its workers), added up.

    ``process_resident_memory_bytes`` is the process that serves the scrape alone; with
    ``--workers N`` most of the agent is in the workers. Pages processes share (libraries,
    what a worker inherited at the fork) count once per process: the sum is an upper bound.
    """
    rss = peak = counted = 0
    for pid in pids:
        try:
            with open(f"{proc}/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS:", "VmHWM:")))
            rss += int(fields["VmRSS"].split()[0]) * 1024
            peak += int(fields["VmHWM"].split()[0]) * 1024
            counted += 1
        except (OSError, KeyError, ValueError, IndexError):
            continue  # a worker that has just gone
    return {"resident": rss, "peak": peak, "processes": counted}


def open_store(config: Config) -> Any:
    """The device database in the state directory, or None (with a warning) when it cannot be had."""
    import sqlite3

    from agent.registry import Registry
    from agent.store import Store, StoreWriter

    try:
        store = Store(config.state_dir)
    except (OSError, sqlite3.Error) as e:
        log.warning(
            "the device database in %s cannot be used (%s): names learned now will not survive a restart; set state_dir or --state-dir",
            config.state_dir,
            getattr(e, "strerror", None) or e,
        )
        return None
    return StoreWriter(Registry(config.devices.max_devices), store, config.devices.store_interval_seconds)


def openers(cfg: Config, *, pace: bool) -> tuple[list[str], Callable[[int], Source]]:
    """Interface names and a function opening source number i: live interfaces, or capture files."""
    if cfg.capture.pcap:
        from agent.replay import file_opener  # with the file readers: a live agent does without them

        return file_opener(cfg, cfg.capture.pcap, pace=pace)
    names = interface_names(cfg)
    return names, lambda i: open_live(cfg, names, i)


def interface_names(cfg: Config) -> list[str]:
    return list(cfg.capture.interfaces) or [default_route_interface()]


def open_live(cfg: Config, names: list[str], i: int, fanout_group: int | None = None) -> Source:
    """Open a live capture on interface number ``i`` with the config's settings."""
    from agent.capture.live import LiveSource, block_timeout_ms, ring_bytes

    c = cfg.capture
    return LiveSource(
        names[i],
        index=i,
        snaplen=c.snaplen,
        promiscuous=c.promiscuous,
        buffer_bytes=c.buffer_bytes or ring_bytes(),
        bpf=c.bpf_filter or None,
        block_timeout_ms=block_timeout_ms(cfg.pipeline.batch_window_ms / 1000),
        fanout_group=fanout_group,
        max_bytes=cfg.pipeline.batch_bytes,
    )


class Agent:
    """Everything ``pktagent run`` runs. Opening the captures and reading the web config happen here,
    so every mistake surfaces before anything is served."""

    def __init__(self, config: Config) -> None:
        from prometheus_client import CollectorRegistry, ProcessCollector

        from agent import web
        from agent.metrics import SnapshotCollector
        from agent.server import MetricsServer

        self.config = config
        self.build = build_labels()
        names, opener = openers(config, pace=True)
        self.pipeline = Pipeline(config, names)
        self.engine = Engine(
            self.pipeline,
            opener,
            batch_size=config.pipeline.batch_size,
            window=config.pipeline.batch_window_ms / 1000,
            queue_capacity=config.pipeline.queue_capacity_packets,
            queue_bytes=config.pipeline.queue_capacity_bytes,
            blocking=False,
        )
        security = web.load(config.web.config_file) if config.web.config_file else None
        self.pool: Any = None
        if config.capture.workers > 1 and not config.capture.pcap:
            from agent.workers import WorkerPool

            # The workers capture and count; this process's pipeline only keeps the registry they feed.
            self.pool = WorkerPool(config, names, config.capture.workers)
        else:
            self.engine.open_all()
        # The captures are open (a mistake there is the one error to report); now the device store.
        self.store_writer = open_store(config)
        if self.store_writer is not None:
            known = self.store_writer.store.load()
            self.pipeline.adopt_devices(known)
            if self.pool is not None:
                self.pool.adopt_devices(known)
            self.store_writer.registry = self.pipeline.registry
        self._sync: threading.Thread | None = None
        self._stopping = threading.Event()
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(self.snapshot))
        ProcessCollector(registry=self.registry)  # process_* : CPU, memory, start time (restarts)
        host, port = config_mod.listen_address(config.web.listen)
        self.server = MetricsServer(host, port, self.registry, lambda: health(self.snapshot()), security=security)
        self.otlp: Any = None
        self._otlp_counts: Any = None
        if otlp_enabled(config.otlp):
            from agent.otlp import ExportCounts, OtlpExport  # the SDK is imported only when it is used

            self._otlp_counts = ExportCounts()
            self.otlp = OtlpExport(config.otlp, self.snapshot, self.build, self._otlp_counts)

    def snapshot(self) -> Snapshot:
        snap: Snapshot
        if self.pool is not None:
            snap = self.pool.snapshot().replace(**self.build)
            for obs, now in self.pool.observations:  # what the workers learned, for the device store
                self.pipeline.apply_observations(obs, now)
            self.pool.observations.clear()
        else:
            snap = self.engine.snapshot(**self.build)
        extra = dict(snap.extra)
        extra["memory"] = agent_memory([os.getpid(), *(self.pool.pids() if self.pool is not None else ())])
        if self._otlp_counts is not None:
            extra["otlp_exports"] = self._otlp_counts.copy()
        if self.store_writer is not None:
            extra["store_writes"] = dict(self.store_writer.writes)
        return snap.replace(extra=extra)

    def start(self) -> None:
        if self.config.user:
            from agent.privileges import drop_to

            drop_to(self.config.user, self.config.state_dir)  # before any thread: capabilities are per thread
        self.server.start()
        if self.pool is not None:
            self.pool.start()
            # Names one worker learns reach the others at every snapshot: take one every 2 s.
            self._sync = threading.Thread(target=self._sync_loop, name="workers-sync", daemon=True)
            self._sync.start()
        else:
            self.engine.start()
        if self.store_writer is not None:
            self.store_writer.start()
        if self.otlp is not None:
            self.otlp.start()
        host, _ = config_mod.listen_address(self.config.web.listen)
        log.info("capturing on %s; serving %s://%s:%d/metrics", ", ".join(self.pipeline.interfaces), self.server.scheme, host, self.server.port)

    def _sync_loop(self) -> None:
        while not self._stopping.wait(2.0):
            self.snapshot()

    def stop(self) -> None:
        self._stopping.set()
        if self.pool is not None:
            self.pool.close()
        if self.otlp is not None:
            self.otlp.shutdown()
        self.engine.close()
        if self.store_writer is not None:
            self.store_writer.stop()
        self.server.close()

    def reload(self, new: Config) -> list[str]:
        """Apply what can change while running; returns the changed keys that need a restart."""
        from agent import web

        keys = config_mod.differences(self.config, new)
        applied = [k for k in keys if k in Pipeline.RELOADABLE]
        if applied:
            self.pipeline.reconfigure(new, applied)
            if self.pool is not None:
                self.pool.reconfigure(new, applied)
        if new.web.config_file and new.web.config_file == self.config.web.config_file:
            self.server.security = web.load(new.web.config_file)  # re-read: certificates rotate, users change
        if "capture.bpf_filter" in keys and self.pool is None and not new.capture.pcap:
            for source in self.engine.sources():
                set_filter = getattr(source, "set_filter", None)
                if set_filter is not None:
                    set_filter(new.capture.bpf_filter)
            applied.append("capture.bpf_filter")
        later = [k for k in keys if k not in applied]
        self.config = new if not later else _keep_running(self.config, new, applied)
        log.info("reloaded the config: %s", ", ".join(applied) or "nothing that changes while running")
        if later:
            log.warning("these changes need a restart to take effect: %s", ", ".join(later))
        return later

    def serve(self, stop: threading.Event, reload: Callable[[], Config] | None = None, hup: threading.Event | None = None) -> None:
        """Run until ``stop`` is set (a signal) or the engine fails; when ``hup`` is set, apply ``reload()``."""
        self.start()
        try:
            while not stop.wait(1.0):  # a signal sets stop at once; a SIGHUP or a failure waits at most this long
                if self.engine.failure is not None:
                    raise self.engine.failure
                if hup is not None and hup.is_set() and reload is not None:
                    hup.clear()
                    try:
                        self.reload(reload())
                    except PktagentError as e:
                        log.error("config not reloaded, the running one stays: %s", e)
        finally:
            self.stop()


def _keep_running(old: Config, new: Config, applied: list[str]) -> Config:
    """The config the agent now runs with: the new values that were applied, the old ones for the rest."""
    cfg = old
    for key in applied:
        section, _, name = key.partition(".")
        cfg = cfg.replace(section, **{name: getattr(getattr(new, section), name)}) if name else cfg.replace(**{section: getattr(new, section)})
    return cfg
