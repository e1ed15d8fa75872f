"""The part of HTTP/1.x the endpoint speaks: reading a request head, writing a response head.

A scraper sends a request line and a few headers, never a body the endpoint needs, so this
is all of it; the stdlib's ``http.server`` would bring ``http.client`` and ``email`` (about
7 MiB of a live agent's memory) for the same. Limits are the stdlib's: a line of at most
64 KiB and at most 100 headers (431 beyond), HTTP/1.x only (505 otherwise).

>>> import io
>>> r = read_request(io.BytesIO(b"GET /metrics?name[]=up HTTP/1.1\\r\\nAccept-Encoding: gzip\\r\\n\\r\\n"))
>>> (r.method, r.target, r.header("accept-encoding"), r.keep_alive)
('GET', '/metrics?name[]=up', 'gzip', True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import BinaryIO

MAX_LINE = 65536
MAX_HEADERS = 100
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class BadRequestError(Exception):
    """A request the endpoint cannot read: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: tuple[int, int]
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased; repeats joined by ", "

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only when asked to keep it."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return "keep-alive" in tokens if self.version < (1, 1) else "close" not in tokens

    @property
    def has_body(self) -> bool:
        return self.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in self.headers


def _line(rfile: BinaryIO, too_long: tuple[int, str]) -> bytes:
    line = rfile.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise BadRequestError(*too_long)
    return line


def read_request(rfile: BinaryIO) -> Request | None:
    """The next request head on a connection (None: the client closed it first). Raises ``BadRequestError``."""
    line = _line(rfile, (414, "Request-URI Too Long"))
    if not line:
        return None
    words = line.decode("iso-8859-1").rstrip("\r\n").split()
    if len(words) != 3:
        raise BadRequestError(400, "Bad request syntax")
    method, target, version = words
    major, _, minor = version.removeprefix("HTTP/").partition(".")
    if not version.startswith("HTTP/") or not (major.isdigit() and minor.isdigit()):
        raise BadRequestError(400, "Bad request version")
    if major != "1":
        raise BadRequestError(505, "HTTP Version Not Supported")
    headers: dict[str, str] = {}
    for count in range(MAX_HEADERS + 1):
        line = _line(rfile, (431, "Line too long"))
        if line in (b"\r\n", b"\n", b""):
            break
        if count == MAX_HEADERS:
            raise BadRequestError(431, "Too many headers")
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequestError(400, "Bad header line")
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Request(method, target, (1, int(minor)), headers)


def http_date(now: float | None = None) -> str:
    """An IMF-fixdate (RFC 9110), whatever the locale: ``Mon, 30 Nov 2026 17:35:09 GMT``."""
    t = time.gmtime(now)
    return f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"


def response_head(status: int, headers: dict[str, str]) -> bytes:
    """The status line and headers of an HTTP/1.1 answer, ``Server`` and ``Date`` first."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}", "Server: pktagent", f"Date: {http_date()}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
