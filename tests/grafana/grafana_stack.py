"""A real Prometheus scraping real agents, for the dashboard and rule tests; every process it starts, it stops.

``Stack`` starts ``pktagent run`` on capture files looping at their recorded pace, optionally a
live agent inside a network namespace (reached through ``nsbridge``), and a Prometheus with a
1 s scrape and evaluation interval and the mixin's rules; ``Prometheus`` is a small client of its
HTTP API. All of it listens on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from scrape import free_port

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = Path(__file__).resolve().parent / "nsbridge.py"
JOB = "pktagent"


def http_get(url: str, timeout: float = 5.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body: bytes = r.read()
            return body
    except urllib.error.HTTPError as e:
        e.close()  # its connection, or the garbage collector warns (an error under pytest) whenever it gets to it
        raise


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.25) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError, KeyError, urllib.error.URLError) as e:
            last = e
        time.sleep(every)
    raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}" + (f" (last error: {last})" if last else ""))


class PromError(Exception):
    """Prometheus answered a query with an error (a parse error, say)."""


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            with e:
                body = json.load(e)
        if body.get("status") != "success":
            raise PromError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return list(self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def label_values(self, label: str, match: str) -> list[str]:
        return list(self.api(f"label/{label}/values", **{"match[]": match}))


def values(series: list[dict[str, Any]]) -> list[float]:
    """Every value of a query result, instant or range, as floats."""
    out = []
    for s in series:
        points = s.get("values") or [s["value"]]
        out += [float(v) for _, v in points]
    return out


def finite(series: list[dict[str, Any]]) -> list[float]:
    return [v for v in values(series) if math.isfinite(v)]


class Stack:
    """Agents and a Prometheus scraping them, as a context manager that stops them all."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.targets: dict[str, str] = {}  # instance label -> address
        self.agent_ports: dict[str, int] = {}
        self.prom: Prometheus | None = None
        self.started = time.time()
        self._cleanups: list[Callable[[], None]] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, name: str, cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self._cleanups.append(log.close)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, **kw)
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with status {proc.returncode}:\n{self.log(name)}")

    def _config(self, instance: str, config: dict[str, Any]) -> Path:
        """The agent's config file, with a state directory of its own: the default, /var/lib/pktagent, would
        have every agent of every run share one device database (and a real deployment's)."""
        cfg = self.dir / f"{instance}.yml"
        cfg.write_text(yaml.safe_dump({"state_dir": str(self.dir / f"{instance}-state"), **config}))
        return cfg

    def agent(self, instance: str, pcap: Path, config: dict[str, Any]) -> None:
        """``pktagent run`` replaying ``pcap`` in a loop at its recorded pace."""
        port = free_port()
        cfg = self._config(instance, config)
        self._spawn(
            instance,
            [sys.executable, "-m", "agent", "run", "--pcap", str(pcap), "--loop", "--listen", f"127.0.0.1:{port}", "--config", str(cfg)],
        )
        self.targets[instance] = f"127.0.0.1:{port}"
        self.agent_ports[instance] = port

    def live_agent(self, instance: str, pair: Any, config: dict[str, Any]) -> None:
        """``pktagent run`` capturing on ``pair.rx`` inside the receiver namespace, scraped through a bridge."""
        port = free_port()
        cfg = self._config(instance, config)
        self._spawn(instance, pair.in_receiver(sys.executable, "-m", "agent", "run", "-i", pair.rx, "--listen", f"127.0.0.1:{port}", "--config", str(cfg)))
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._cleanups.append(listener.close)
        self._spawn(
            f"{instance}-bridge", pair.in_receiver(sys.executable, str(BRIDGE), str(listener.fileno()), "127.0.0.1", str(port)), pass_fds=[listener.fileno()]
        )
        self.targets[instance] = f"127.0.0.1:{listener.getsockname()[1]}"
        self.agent_ports[instance] = listener.getsockname()[1]

    def dead_target(self, instance: str) -> None:
        """A target nothing listens on: an agent that is down."""
        self.targets[instance] = f"127.0.0.1:{free_port()}"

    def prometheus(self, rule_files: list[Path]) -> Prometheus:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "static_configs": [{"targets": [addr], "labels": {"instance": name}} for name, addr in self.targets.items()],
                }
            ],
        }
        path = self.dir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={path}",
                f"--storage.tsdb.path={self.dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            self.check_alive()
            return http_get(f"{url}/-/ready", timeout=1) is not None

        wait_until("Prometheus to be ready", ready, timeout=30)
        self.prom = Prometheus(url)
        return self.prom

    def scrape(self, instance: str) -> str:
        """The agent's own /metrics text."""
        return http_get(f"http://{self.targets[instance]}/metrics").decode()

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for cleanup in self._cleanups:
            with contextlib.suppress(OSError):
                cleanup()
