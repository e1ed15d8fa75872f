"""The running agent: captures, pipeline, ``/metrics`` server and OTLP export, started and stopped together.

``pktagent run`` is ``Agent(config).serve()``; tests build an ``Agent`` in-process the same way.

>>> # agent = Agent(config); agent.start(); ...; agent.stop()
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import config as config_mod
from agent.base.snapshot import Snapshot
from agent.config import Config
from agent.errors import CaptureError, ConfigError, PktagentError
from agent.export.health import health
from agent.naming.domains import load_suffixes
from agent.runtime.engine import live_engine
from agent.runtime.memory import release_file_pages
from agent.runtime.pipeline import Pipeline
from agent.runtime.privileges import become
from agent.runtime.sources import open_live, openers
from agent.version import build_labels

log = logging.getLogger("pktagent")


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

    from agent.naming.registry import Registry
    from agent.naming.store import Store, StoreWriter, describe

    try:
        store = Store(config.state_dir)
    except (OSError, sqlite3.Error) as e:
        log.warning(
            "the device database in %s cannot be used (%s): names learned now will not survive a restart; set state_dir or --state-dir",
            config.state_dir,
            describe(e, config.state_dir) if isinstance(e, sqlite3.Error) else (e.strerror or e),
        )
        return None
    return StoreWriter(Registry(config.devices.max_devices), store, config.devices.store_interval_seconds)


class Agent:
    """Everything ``pktagent run`` runs. Opening the captures and reading the web config happen here,
    so every mistake surfaces before anything is served."""

    def __init__(self, config: Config) -> None:
        from agent.export import web

        self.config = config
        self.build = build_labels()
        names, opener = openers(config, pace=True)
        if not config.capture.pcap:
            # A capture reopened after a fault opens with the config running then (a reloaded filter), not the first one.
            opener = lambda i: open_live(self.config, names, i)  # noqa: E731
        self.pipeline = Pipeline(config, names, host_local=not config.capture.pcap)
        # Any network the agent watches has DNS answers within seconds: the suffix list (20 ms,
        # 0.6 MiB) is read at start, not in the middle of the first busy batch, and before any
        # worker forks, so the workers share it.
        load_suffixes()
        self.engine = live_engine(self.pipeline, opener, config)
        security = web.load(config.web.config_file) if config.web.config_file else None
        self.pool: Any = None
        if config.capture.workers > 1 and not config.capture.pcap:
            from agent.runtime.workers import WorkerPool

            # The workers capture and count; this process's pipeline only keeps the registry they feed.
            self.pool = WorkerPool(config, names, config.capture.workers)
        else:
            self.engine.open_all()
        self._sync: threading.Thread | None = None
        self._stopping = threading.Event()
        self.server = self._server(security)
        if config.user:
            # The captures are open and the port is bound: root is needed no longer. Before any
            # thread (capabilities are per thread) and before the device database is opened, so
            # that nothing in the state directory is ever opened or changed as root.
            become(config.user, config.state_dir)
        # The captures are open (a mistake there is the one error to report); now the device store.
        self.store_writer = open_store(config)
        if self.store_writer is not None:
            known = self.store_writer.store.load()
            self.pipeline.adopt_devices(known)
            if self.pool is not None:
                self.pool.adopt_devices(known)
            self.store_writer.registry = self.pipeline.registry
        self.otlp: Any = None
        self._otlp_counts: Any = None
        if otlp_enabled(config.otlp):
            from agent.export.otlp import ExportCounts, OtlpExport  # the SDK is imported only when it is used

            self._otlp_counts = ExportCounts()
            self.otlp = OtlpExport(config.otlp, self.snapshot, self.build, self._otlp_counts)

    def _server(self, security: Any) -> Any:
        """The /metrics endpoint, bound now (while privileges last), serving from ``start`` on."""
        from agent.export.metrics import Exposition
        from agent.export.process import process_families
        from agent.export.server import MetricsServer

        self.exposition = Exposition(self.snapshot, extra=process_families)  # process_*: CPU, memory, start time (restarts)
        host, port = config_mod.listen_address(self.config.web.listen)
        return MetricsServer(host, port, self.exposition.render, lambda: health(self.snapshot()), security=security, limits=self.config.web)

    def snapshot(self) -> Snapshot:
        """Every figure the agent exports, for a scrape, /health or OTLP. Reads only: what the workers
        learned reaches this process's registry through the sync loop."""
        # With workers, this process's engine counts nothing: the workers' snapshots add up.
        snap = self.pool.snapshot(empty=self.engine.snapshot).replace(**self.build) if self.pool else self.engine.snapshot(**self.build)
        return snap.replace(
            memory=agent_memory([os.getpid(), *(self.pool.pids() if self.pool is not None else ())]),
            otlp_exports=None if self._otlp_counts is None else self._otlp_counts.copy(),
            store_writes=None if self.store_writer is None else dict(self.store_writer.writes),
            http_rejected=self.server.rejected(),
        )

    def start(self) -> None:
        # Everything is imported and set up: what start-up alone touched can go (before the workers fork, so they share the rest).
        release_file_pages()
        if self.pool is not None:
            # The workers first: no thread may run across a fork (a lock it holds stays held in the child).
            self.pool.start(inherited=[self.server])
        self.server.start()
        if self.pool is not None:
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
        log.info(
            "capturing on %s; serving %s://%s:%d%s",
            ", ".join(self.pipeline.interfaces),
            self.server.scheme,
            host,
            self.server.port,
            self.config.web.telemetry_path,
        )

    def _sync_loop(self) -> None:
        while not self._stopping.wait(2.0):
            self.snapshot()  # passes names one worker learned on to the others
            self._absorb_learned()

    def _absorb_learned(self) -> None:
        """What the workers learned, into this process's registry: the device store writes it."""
        for obs, now in self.pool.take_observations():
            self.pipeline.apply_observations(obs, now)

    def stop(self) -> None:
        self._stopping.set()
        if self.pool is not None:
            self.pool.close()
            self._absorb_learned()
        if self.otlp is not None:
            self.otlp.shutdown()
        self.engine.close()
        if self.store_writer is not None:
            self.store_writer.stop()
        self.server.close()

    def reload(self, new: Config) -> list[str]:
        """Apply what can change while running; returns the changed keys that need a restart.

        All or nothing: everything is checked (and a filter tried) before anything changes, so a
        reload that raises leaves the agent exactly as it was.
        """
        from agent.export import web

        keys = config_mod.differences(self.config, new)
        applied = [k for k in keys if k in Pipeline.RELOADABLE]
        security = None
        if new.web.config_file and new.web.config_file == self.config.web.config_file:
            security = web.load(new.web.config_file)  # re-read: certificates rotate, users change
            refuse_weaker(self.server.security, security, new.web.config_file)
        if "capture.bpf_filter" in keys and self.pool is None and not new.capture.pcap:
            self._set_filters(new.capture.bpf_filter)  # the last check that can fail: on failure every filter is put back
            applied.append("capture.bpf_filter")
        if applied:
            self.pipeline.reconfigure(new, applied)
            if self.pool is not None:
                self.pool.reconfigure(new, applied)
        if security is not None:
            self.server.security = security
        later = [k for k in keys if k not in applied]
        # A capture reopened from now on (after an interface fault) opens with what was applied.
        self.config = new if not later else _keep_running(self.config, new, applied)
        log.info("reloaded the config: %s", ", ".join(applied) or "nothing that changes while running")
        if later:
            log.warning("these changes need a restart to take effect: %s", ", ".join(later))
        return later

    def _set_filters(self, bpf: str) -> None:
        """``bpf`` on every open capture, or (when libpcap refuses it) on none."""
        done = []
        try:
            for source in self.engine.sources():
                source.set_filter(bpf)
                done.append(source)
        except PktagentError:
            for source in done:
                source.set_filter(self.config.capture.bpf_filter)
            raise

    def serve(self, stop: threading.Event, reload: Callable[[], Config] | None = None, hup: threading.Event | None = None) -> None:
        """Run until ``stop`` is set (a signal) or the engine fails; when ``hup`` is set, apply ``reload()``."""
        self.start()
        try:
            while not stop.wait(1.0):  # a signal sets stop at once; a SIGHUP or a failure waits at most this long
                if self.engine.failure is not None:
                    raise self.engine.failure
                if self.pool is not None and self.pool.failure is not None:
                    raise CaptureError(self.pool.failure)
                if hup is not None and hup.is_set() and reload is not None:
                    hup.clear()
                    try:
                        self.reload(reload())
                    except PktagentError as e:
                        log.error("config not reloaded, the running one stays: %s", e)
        finally:
            self.stop()


def refuse_weaker(old: Any, new: Any, path: str) -> None:
    """A re-read web config may turn TLS or basic auth off only by saying so: an emptied or truncated file must not."""
    import yaml

    try:
        said = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        said = {}
    said = said if isinstance(said, dict) else {}
    if old.tls is not None and new.tls is None and "tls_server_config" not in said:
        raise ConfigError(f"{path} no longer has tls_server_config: serving plain HTTP needs `tls_server_config: null` in it (or a restart)")
    if old.users and not new.users and "basic_auth_users" not in said:
        raise ConfigError(f"{path} no longer has basic_auth_users: serving without a password needs `basic_auth_users: {{}}` in it (or a restart)")


def _keep_running(old: Config, new: Config, applied: list[str]) -> Config:
    """The config the agent now runs with: the new values that were applied, the old ones for the rest."""
    cfg = old
    for key in applied:
        section, _, name = key.partition(".")
        cfg = cfg.replace(section, **{name: getattr(getattr(new, section), name)}) if name else cfg.replace(**{section: getattr(new, section)})
    return cfg
