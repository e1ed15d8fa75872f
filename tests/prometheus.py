"""A real Prometheus server (Debian's) for the tests: started on a free loopback port, queried over its HTTP API."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from scrape import free_port


class Prometheus:
    """``prometheus`` with ``scrape_configs``, 1 s scrape interval, storage in ``workdir``."""

    def __init__(self, binary: str, workdir: Path, scrape_configs: list[dict[str, Any]], rule_files: list[str] | None = None) -> None:
        self.port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": scrape_configs}
        if rule_files:
            config["rule_files"] = rule_files
        cfg = workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait(lambda: self._get("/-/ready") is not None, 30, "Prometheus did not become ready")

    def _get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=3) as r:
                body = r.read()
        except OSError:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if not isinstance(answer, dict) or answer.get("status") != "success":
            return []
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict[str, Any]]:
        answer = self._get("/api/v1/targets")
        return list(answer["data"]["activeTargets"]) if isinstance(answer, dict) else []

    @staticmethod
    def wait(condition: Any, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(message)
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
