"""The HTTP endpoint: metrics at ``web.telemetry_path`` (Prometheus exposition), ``/health`` (JSON) and a landing page at ``/``.

HTTP/1.1 with keep-alive; metrics gzip-compressed when the scraper accepts it, and filtered by
``name[]`` as Prometheus's own servers do. Any other path is 404, any method but GET and
HEAD 405. With a web config (``agent.web``) every connection is TLS — the handshake runs in
the connection's own thread, so a slow client never holds up the others — and every request
must carry valid basic-auth credentials: a wrong or missing one gets 401 and nothing else.
Plain HTTP sent to a TLS port gets a short 400, as Go's servers answer.

Bounds (``web.*`` config keys), each refusal counted in ``pktagent_http_rejected_total{reason}``:
at most ``max_connections`` open and ``max_connections_per_address`` from one client address
(more are closed at once), a request head or TLS handshake
within ``read_timeout_seconds``, a kept-alive connection idle at most ``idle_timeout_seconds``,
a response taken within ``write_timeout_seconds``, and ``auth_queue`` requests waiting for
bcrypt. When the process runs out of file descriptors, accepting backs off instead of spinning.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import selectors
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import parse_qs, urlsplit

from agent.config import WebConfig
from agent.errors import ConfigError
from agent.export.http1 import BadRequestError, Request, read_request, response_head
from agent.export.metrics import CONTENT_TYPE
from agent.export.web import WebSecurity

log = logging.getLogger("pktagent.server")

PLAIN_TO_TLS = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
TOO_MANY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"
REASONS = ("connection_limit", "address_limit", "accept_failed", "read_timeout", "idle_timeout", "write_timeout", "auth_queue_full")
ACCEPT_BACKOFF = 0.1  # out of file descriptors: wait this long before accepting again, never spin
GZIP_LEVEL = 6  # Go's default, as promhttp uses: the demo's 28.3 KB exposition -> 4.0 KB in 0.4 ms
DISCONNECTED = (OSError,)  # a socket or TLS error (ssl.SSLError is an OSError): the client went away or stalled; one debug line


class _DeadlineReader(io.RawIOBase):
    """Reads the socket until a deadline for the whole read, not per recv: a client trickling a byte at a time still times out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = float("inf")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(remaining)
        return self.sock.recv_into(buffer)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    metrics: Callable[[Collection[str] | None], bytes]
    health: Callable[[], tuple[int, dict[str, Any]]]
    security: WebSecurity
    limits: WebConfig

    def server_activate(self) -> None:
        super().server_activate()
        self.rejected = dict.fromkeys(REASONS, 0)
        self.open_connections = 0
        self._by_address: dict[str, int] = {}
        self._count_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._accept_warned = 0.0

    def count(self, reason: str) -> None:
        with self._count_lock:
            self.rejected[reason] += 1

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # The connection stays in the backlog and the socket readable: without a pause the loop spins.
                self.count("accept_failed")
                if time.monotonic() - self._accept_warned > 60:
                    self._accept_warned = time.monotonic()
                    log.warning('cannot accept connections: %s (pausing; see pktagent_http_rejected_total{reason="accept_failed"})', e.strerror)
                self._stopping.wait(ACCEPT_BACKOFF)
            raise

    def process_request(self, request: Any, client_address: Any) -> None:
        address = client_address[0]
        with self._count_lock:
            held = self._by_address.get(address, 0)
            if self.open_connections >= self.limits.max_connections:
                refused = "connection_limit"
            elif held >= self.limits.max_connections_per_address:
                refused = "address_limit"  # one client cannot take every slot from the others
            else:
                refused = ""
                self.open_connections += 1
                self._by_address[address] = held + 1
            if refused:
                self.rejected[refused] += 1
        if not refused:
            try:
                super().process_request(request, client_address)
            except BaseException:  # no thread to give it back: give the slot back here
                self._release(address)
                raise
            return
        if self.security.tls is None:
            try:  # best effort, never blocking: this is the accepting thread
                request.setblocking(False)
                request.send(TOO_MANY)
            except OSError:
                pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._release(client_address[0])

    def _release(self, address: str) -> None:
        with self._count_lock:
            self.open_connections -= 1
            if self._by_address[address] > 1:
                self._by_address[address] -= 1
            else:
                del self._by_address[address]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: the TLS handshake happens here, not in the accepting thread."""
        tls = self.security.tls
        if tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.limits.read_timeout_seconds)
        try:
            first = request.recv(1, socket.MSG_PEEK)
            if first and first != b"\x16":  # not a TLS handshake record: someone speaks plain HTTP
                request.sendall(PLAIN_TO_TLS)
                return
            request = tls.wrap_socket(request, server_side=True)
        except TimeoutError:
            self.count("read_timeout")
            log.debug("TLS handshake with %s timed out", client_address[0])
            return
        except OSError as e:  # ssl.SSLError included
            log.debug("TLS handshake with %s failed: %s", client_address[0], e)
            return
        try:
            super().finish_request(request, client_address)
        finally:
            request.close()  # the TLS wrapper took over the socket the server would close

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("error serving %s", client_address[0] if client_address else "a client")

    def serve_forever(self, poll_interval: float | None = None) -> None:
        """socketserver's loop, woken for a shutdown by an eventfd instead of polling for one.

        socketserver's own loop wakes every ``poll_interval`` to see whether it should stop:
        on an idle agent, two wakes a second of the HTTP thread, 0.29 ms of CPU a second
        (a fifth of an idle agent's). This one sleeps until a connection or ``shutdown``.
        """
        try:
            with selectors.PollSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    ready = selector.select(poll_interval)
                    if self._stopping.is_set():
                        break
                    if any(key.fileobj is self for key, _ in ready):
                        self._handle_request_noblock()  # type: ignore[attr-defined]  # socketserver's own step, not in typeshed
                    self.service_actions()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (running in another thread) and wait for it."""
        self._stopping.set()
        os.eventfd_write(self._wake, 1)
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        with contextlib.suppress(AttributeError, OSError):
            os.close(self._wake)


class _Handler(socketserver.BaseRequestHandler):
    """One connection: requests read in turn (keep-alive), each answered whole before the next is read."""

    server: _Server
    connection: socket.socket

    def setup(self) -> None:
        self.connection = self.request
        self._reader = _DeadlineReader(self.connection)  # a deadline for the whole request head
        self.rfile = io.BufferedReader(self._reader)
        self._requests = 0
        self._reader.deadline = time.monotonic() + self.server.limits.read_timeout_seconds
        self.close_connection = False
        self.req = Request("GET", "", (1, 1))

    def handle(self) -> None:
        try:
            while not self.close_connection:
                self.handle_one_request()
        except DISCONNECTED as e:
            log.debug("%s went away mid-response: %s", self.client_address[0], e or type(e).__name__)

    def handle_one_request(self) -> None:
        limits = self.server.limits
        if self._requests:  # between two requests on a kept-alive connection: the idle timeout
            self._reader.deadline = time.monotonic() + limits.idle_timeout_seconds
        try:
            if not self.rfile.peek(1):
                self.close_connection = True
                return
        except TimeoutError:
            self.server.count("idle_timeout" if self._requests else "read_timeout")
            self.close_connection = True
            return
        if self._requests:
            self._reader.deadline = time.monotonic() + limits.read_timeout_seconds
        self._requests += 1
        try:
            req = read_request(self.rfile)
        except BadRequestError as e:
            self.send_error(e.status, e.message)
            return
        except TimeoutError:
            self.server.count("read_timeout")
            log.debug("request from %s timed out", self.client_address[0])
            self.close_connection = True
            return
        if req is None:
            self.close_connection = True
            return
        self.req = req
        self.close_connection = not req.keep_alive or req.has_body  # a body we do not read must not be taken for the next request
        if req.method in ("GET", "HEAD"):
            self.do_GET()
        else:
            self._not_allowed()

    def send_error(self, code: int, message: str) -> None:
        """A request that cannot be read, answered in plain text (never HTML) and the connection closed."""
        self.close_connection = True
        self._send(code, f"{code} {message}\n".encode(), "text/plain; charset=utf-8", {"Connection": "close"}, secured=False)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None, *, secured: bool = True) -> None:
        self.connection.settimeout(self.server.limits.write_timeout_seconds)
        headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        headers.update({**self.server.security.headers, **(extra or {})} if secured else (extra or {}))
        log.debug('%s "%s %s" %d %d', self.client_address[0], self.req.method, self.req.target, status, len(body))
        try:
            self.connection.sendall(response_head(status, headers) + (b"" if self.req.method == "HEAD" else body))
        except TimeoutError:
            self.server.count("write_timeout")
            raise

    def _authorized(self) -> bool:
        ok = self.server.security.check(self.req.header("authorization"), self.client_address[0])
        if ok is None:
            self.server.count("auth_queue_full")
            self._send(429, b"Too many authentication attempts; retry later.\n", "text/plain; charset=utf-8", {"Retry-After": "1"})
            return False
        if not ok:
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="pktagent"'})
        return ok

    def do_GET(self) -> None:  # noqa: N802 - GET and HEAD alike
        if not self._authorized():
            return
        url = urlsplit(self.req.target)
        if url.path == self.server.limits.telemetry_path:
            self._metrics(parse_qs(url.query))
        elif url.path == "/health":
            status, body = self.server.health()
            self._send(status, json.dumps(body, indent=2).encode() + b"\n", "application/json")
        elif url.path == "/":
            self._send(200, self._landing(), "text/html; charset=utf-8")
        else:
            self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

    def _metrics(self, params: dict[str, list[str]]) -> None:
        body = self.server.metrics(set(params["name[]"]) if "name[]" in params else None)
        extra = {"Vary": "Accept-Encoding"}
        if accepts_gzip(self.req.header("accept-encoding", "") or ""):
            body = zlib.compress(body, GZIP_LEVEL, wbits=31)  # gzip.compress's own call, without importing gzip
            extra["Content-Encoding"] = "gzip"
        self._send(200, body, CONTENT_TYPE, extra)

    def _landing(self) -> bytes:
        _, health = self.server.health()
        metrics = _escape(self.server.limits.telemetry_path.lstrip("/"))
        rows = "".join(
            f"<tr><td>{_escape(str(c['interface']))}</td><td>{'up' if c['up'] else 'down'}</td>"
            f"<td>{int(c['packets_captured'])}</td><td>{_escape(str(c.get('error') or ''))}</td></tr>"
            for c in health.get("captures", [])
        )
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8"><title>pktagent</title></head>\n'
            f"<body><h1>pktagent</h1><p>Network traffic exporter, version {_escape(str(health.get('version', '')))}.</p>\n"
            f"<table><tr><th>Capture</th><th>State</th><th>Packets captured</th><th>Error</th></tr>{rows}</table>\n"
            f'<ul><li><a href="{metrics}">Metrics</a></li><li><a href="health">Health</a></li></ul>\n</body></html>\n'
        ).encode()

    def _not_allowed(self) -> None:
        self.close_connection = True  # its body, if any, is not read
        if self._authorized():
            self._send(405, b"Method Not Allowed\n", "text/plain; charset=utf-8", {"Allow": "GET, HEAD", "Connection": "close"})


def _escape(text: str) -> str:
    """Text for the landing page's HTML, as ``html.escape`` does it (that module loads 2,000 entities to unescape)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;").replace("'", "&#x27;")


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (``gzip``, ``gzip;q=0.5``, ``*``; not ``gzip;q=0``)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            if q.startswith("q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def address_family(host: str, port: int) -> socket.AddressFamily:
    """The family of the address ``host`` names (a name is resolved, as the bind will), IPv4 first."""
    # A str host goes through the idna codec (and its nameprep tables, 0.3 MiB resident): an ASCII one need not.
    name: str | bytes | None = (host.encode("ascii") if host.isascii() else host) if host else None
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"web.listen: cannot listen on {host}:{port}: {e.strerror}") from None
    families = [info[0] for info in infos]
    return socket.AF_INET if socket.AF_INET in families else families[0]


class MetricsServer:
    """Serve ``metrics`` (the exposition, given the ``name[]`` filter) and ``health`` on ``host:port`` from a background thread.

    >>> server = MetricsServer("127.0.0.1", 0, lambda names: b"", lambda: (200, {}))
    >>> server.port > 0
    True
    >>> server.close()
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Callable[[Collection[str] | None], bytes],
        health: Callable[[], tuple[int, dict[str, Any]]],
        *,
        security: WebSecurity | None = None,
        limits: WebConfig | None = None,
    ) -> None:
        server_class = type("Server", (_Server,), {"address_family": address_family(host, port)})
        try:
            self._httpd: _Server = server_class((host, port), _Handler, bind_and_activate=False)
            self._httpd.limits = limits or WebConfig()
            self._httpd.server_bind()
            self._httpd.server_activate()
        except OSError as e:
            self._httpd.server_close()
            raise ConfigError(f"web.listen: cannot listen on {host}:{port}: {e.strerror or e}") from None
        self._httpd.metrics = metrics
        self._httpd.health = health
        self._gate_size = self._httpd.limits.auth_queue
        self._httpd.security = WebSecurity()
        self.security = security or WebSecurity()
        self.port = self._httpd.server_address[1]
        self.scheme = "https" if self._httpd.security.tls else "http"
        self._thread: threading.Thread | None = None

    @property
    def security(self) -> WebSecurity:
        return self._httpd.security

    @security.setter
    def security(self, value: WebSecurity) -> None:
        """A new web config (reload) takes effect from the next connection on, TLS and users alike."""
        old = self._httpd.security
        value.adopt(old)
        if value.gate.size != self._gate_size:
            from agent.export.web import AuthGate

            value.gate = AuthGate(self._gate_size)
        self._httpd.security = value

    def rejected(self) -> dict[str, int]:
        """Refusals so far by reason (``pktagent_http_rejected_total``)."""
        with self._httpd._count_lock:
            return dict(self._httpd.rejected)

    @property
    def open_connections(self) -> int:
        return self._httpd.open_connections

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(2.0)
        self._httpd.server_close()
