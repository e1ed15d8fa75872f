"""The HTTP endpoint: ``/metrics`` (Prometheus exposition), ``/health`` (JSON) and a landing page at ``/``.

Any other path is 404. With a web config (``agent.web``) every connection is TLS — the
handshake runs in the connection's own thread, so a slow client never holds up the others —
and every request must carry valid basic-auth credentials: a wrong or missing one gets 401
and nothing else. Plain HTTP sent to a TLS port gets a short 400, as Go's servers answer.
Scrapes only read snapshots, so a scrape storm costs the pipeline nothing but snapshot copies.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from agent._exceptions import ConfigError
from agent.web import WebSecurity

log = logging.getLogger("pktagent.server")

LANDING = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>pktagent</title></head>
<body><h1>pktagent</h1><p>Network traffic exporter.</p>
<ul><li><a href="metrics">Metrics</a></li><li><a href="health">Health</a></li></ul>
</body></html>
"""
PLAIN_TO_TLS = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
HANDSHAKE_TIMEOUT = 10.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    registry: CollectorRegistry
    health: Callable[[], tuple[int, dict[str, Any]]]
    security: WebSecurity

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: the TLS handshake happens here, not in the accepting thread."""
        tls = self.security.tls
        if tls is not None:
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                first = request.recv(1, socket.MSG_PEEK)
                if first and first != b"\x16":  # not a TLS handshake record: someone speaks plain HTTP
                    request.sendall(PLAIN_TO_TLS)
                    return
                request = tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address[0], e)
                return
            request.settimeout(None)
            try:
                super().finish_request(request, client_address)
            finally:
                request.close()  # the TLS wrapper took over the socket the server would close
            return
        super().finish_request(request, client_address)


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
        for k, v in {**self.server.security.headers, **(extra or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        if not self.server.security.check(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="pktagent"'})
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
        security: WebSecurity | None = None,
    ) -> None:
        server_class = type("Server", (_Server,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self._httpd: _Server = server_class((host, port), _Handler)
        except OSError as e:
            raise ConfigError(f"web.listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._httpd.registry = registry
        self._httpd.health = health
        self._httpd.security = security or WebSecurity()
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if self._httpd.security.tls else "http"
        self._thread: threading.Thread | None = None

    @property
    def security(self) -> WebSecurity:
        return self._httpd.security

    @security.setter
    def security(self, value: WebSecurity) -> None:
        """A new web config (reload) takes effect from the next connection on, TLS and users alike."""
        self._httpd.security = value

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(2.0)
        self._httpd.server_close()
