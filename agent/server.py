"""The HTTP endpoint: ``/metrics`` (Prometheus exposition), ``/health`` (JSON) and a landing page at ``/``.

Any other path is 404. Scrapes only read snapshots, so a scrape storm costs the
pipeline nothing but the snapshot copies.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent._exceptions import ConfigError

log = logging.getLogger("pktagent.server")

LANDING = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>pktagent</title></head>
<body><h1>pktagent</h1><p>Network traffic exporter.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="health">Health</a></li></ul>
</body></html>
"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    registry: CollectorRegistry
    health: Callable[[], tuple[int, dict[str, Any]]]
    authorize: Callable[[BaseHTTPRequestHandler], bool]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "pktagent"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if not self.server.authorize(self):
            return
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(self.server.registry), content_type)
        elif path == "/health":
            status, body = self.server.health()
            self._send(status, json.dumps(body, indent=2).encode() + b"\n", "application/json")
        elif path == "/":
            self._send(200, LANDING, "text/html; charset=utf-8")
        else:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET  # noqa: N815 - the stdlib's name


def _allow_all(handler: BaseHTTPRequestHandler) -> bool:
    return True


class MetricsServer:
    """Serve ``registry`` and ``health`` on ``host:port`` from a background thread.

    >>> server = MetricsServer("127.0.0.1", 0, CollectorRegistry(), lambda: (200, {}))
    >>> server.port > 0
    True
    >>> server.close()
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], tuple[int, dict[str, Any]]],
        *,
        wrap_socket: Callable[[socket.socket], socket.socket] | None = None,
        authorize: Callable[[BaseHTTPRequestHandler], bool] = _allow_all,
    ) -> None:
        server_class = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._httpd = server_class((host, port), _Handler)
        except OSError as e:
            raise ConfigError(f"web.listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
        if wrap_socket is not None:
            self._httpd.socket = wrap_socket(self._httpd.socket)
        self._httpd.registry = registry
        self._httpd.health = health
        self._httpd.authorize = authorize
        self.port = self._httpd.server_address[1]
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(2.0)
        self._httpd.server_close()
