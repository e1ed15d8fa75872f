"""The web config of the Prometheus exporter-toolkit: TLS (and mutual TLS) and basic auth for ``/metrics``.

The same file format node_exporter takes with ``--web.config.file``, so a scrape config written
for it works unchanged::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # mTLS; or NoClientCert, VerifyClientCertIfGiven
      client_ca_file: clients-ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...   # bcrypt hashes only

Every mistake is a ``ConfigError`` at start: the agent never falls back to plain HTTP.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.errors import ConfigError

if TYPE_CHECKING:
    import ssl  # imported when a web config asks for TLS: it costs a live agent about 4 MiB

CLIENT_AUTH = {  # the exporter-toolkit's names -> ssl.VerifyMode members
    "NoClientCert": "CERT_NONE",
    "VerifyClientCertIfGiven": "CERT_OPTIONAL",
    "RequireAndVerifyClientCert": "CERT_REQUIRED",
}
TLS_VERSIONS = {"TLS10": "TLSv1", "TLS11": "TLSv1_1", "TLS12": "TLSv1_2", "TLS13": "TLSv1_3"}  # -> ssl.TLSVersion members
TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
NOT_SUPPORTED = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites", "client_allowed_sans", "cert", "key", "client_ca"}
_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
# The hint names the interpreter running pktagent: it has bcrypt, where the system's python3 may not.
HASH_HINT = (
    "create one with `htpasswd -nBC 12 USER` (apache2-utils; the part after the colon) or "
    f"`{sys.executable} -c 'import bcrypt, getpass; print(bcrypt.hashpw(getpass.getpass().encode(), bcrypt.gensalt(12)).decode())'`"
)
AUTH_CACHE = 256  # verified (user, password) pairs remembered, so scrapes do not pay bcrypt every time
SOURCES_TRACKED = 1024  # client addresses whose recent failures are remembered, to order the bcrypt queue
BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; bcrypt >= 5 raises on longer input instead of ignoring the rest


class AuthGate:
    """One bcrypt check at a time, at most ``size`` waiting: a storm of wrong passwords cannot starve good scrapes.

    When the slot frees, the waiting request whose client address has failed least, then has
    fewest requests in the queue, goes next; when the queue is full, a newcomer that ranks better
    takes the place of the worst one waiting, which is turned away (``run`` returns None: the
    caller answers 429 at once). So a scraper on another address than the attacker waits for at
    most the check in progress and its own.

    >>> AuthGate(4).run("192.0.2.1", lambda: True)
    True
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.rejected = 0  # requests turned away because the queue was full
        self.checks = 0  # bcrypt checks done
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[_Waiter] = []
        self._failures: OrderedDict[str, int] = OrderedDict()
        self._queued: dict[str, int] = {}  # requests waiting or being checked, by client address
        self._seq = 0

    def _rank(self, w: _Waiter) -> tuple[int, int, int]:
        """Lower goes first: fewer recent failures, then fewer requests in the queue from the same address, then older."""
        return self._failures.get(w.source, 0), self._queued.get(w.source, 0), w.seq

    def run(self, source: str, check: Callable[[], bool]) -> bool | None:
        """``check()``'s result once it is this request's turn, or None when the queue is full."""
        with self._cond:
            self._queued[source] = self._queued.get(source, 0) + 1
            if self._busy or self._waiting:
                self._seq += 1
                me = _Waiter(source, self._seq)
                if len(self._waiting) >= self.size:
                    worst = max(self._waiting, key=self._rank) if self._waiting else me
                    if worst is me or self._rank(worst) < self._rank(me):
                        self._leave(source)
                        return None
                    self._waiting.remove(worst)
                    self._leave(worst.source)
                    worst.state = "rejected"
                    self._cond.notify_all()
                self._waiting.append(me)
                while me.state == "waiting":
                    self._cond.wait()
                if me.state == "rejected":
                    return None
            self._busy = True
        ok = False
        try:
            ok = check()
        finally:
            with self._cond:
                self.checks += 1
                self._record(source, ok)
                self._queued[source] -= 1
                if not self._queued[source]:
                    del self._queued[source]
                if self._waiting:
                    nxt = min(self._waiting, key=self._rank)
                    self._waiting.remove(nxt)
                    nxt.state = "granted"  # the slot passes straight on: nobody can slip in between
                    self._cond.notify_all()
                else:
                    self._busy = False
        return ok

    def _leave(self, source: str) -> None:
        """A request turned away: counted, and no longer in its address's share of the queue."""
        self.rejected += 1
        self._queued[source] -= 1
        if not self._queued[source]:
            del self._queued[source]

    def _record(self, source: str, ok: bool) -> None:
        if ok:
            self._failures.pop(source, None)
            return
        self._failures[source] = self._failures.get(source, 0) + 1
        self._failures.move_to_end(source)
        while len(self._failures) > SOURCES_TRACKED:
            self._failures.popitem(last=False)


@dataclass
class _Waiter:
    source: str
    seq: int
    state: str = "waiting"  # then "granted" or "rejected"


@dataclass
class WebSecurity:
    """What the web config asks for: a TLS context, and users with bcrypt hashes."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # http_server_config.headers, added to every response
    gate: AuthGate = field(default_factory=lambda: AuthGate(4))  # the server sets its own (web.auth_queue)
    dummy_hash: bytes = b""  # checked for unknown users: a hash at the configured users' cost
    _verified: OrderedDict[tuple[str, bytes], None] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, authorization: str | None, source: str = "") -> bool | None:
        """Whether an ``Authorization`` header passes (always, when no users are configured); None: too busy to check now."""
        if not self.users:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        import hashlib  # only with users: hashlib loads libcrypto

        key = (user, hashlib.sha256(password.encode()).digest())
        with self._lock:  # remembered credentials never queue for bcrypt
            if key in self._verified:
                self._verified.move_to_end(key)
                return True
        import bcrypt

        hashed = self.users.get(user)
        secret = password.encode()[:BCRYPT_MAX_BYTES]
        # An unknown user costs the same bcrypt round as a known one: the timing tells nothing.
        ok = self.gate.run(source, lambda: bcrypt.checkpw(secret, hashed or self.dummy_hash) and hashed is not None)
        if ok:
            with self._lock:
                self._verified[key] = None
                while len(self._verified) > AUTH_CACHE:
                    self._verified.popitem(last=False)
        return ok

    def adopt(self, old: WebSecurity) -> None:
        """Take over a previous config's queue, and its remembered credentials of users whose hash is unchanged (reload)."""
        self.gate = old.gate
        with old._lock:
            kept = [k for k in old._verified if old.users.get(k[0]) is not None and old.users.get(k[0]) == self.users.get(k[0])]
        with self._lock:
            for k in kept:
                self._verified[k] = None


def _dummy_hash(users: dict[str, bytes]) -> bytes:
    """A hash of a random secret at the highest cost among the users' hashes ($2b$12$... -> 12)."""
    import bcrypt

    cost = max(int(h[4:6]) for h in users.values())
    return bytes(bcrypt.hashpw(os.urandom(16), bcrypt.gensalt(rounds=cost)))


def _err(key: str, message: str) -> ConfigError:
    return ConfigError(f"web config key {key}: {message}")


def load(path: str | Path) -> WebSecurity:
    """Read and check an exporter-toolkit web config file."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read web config file {p}: {e.strerror or e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not a valid YAML web config: {str(e).splitlines()[0]}") from None
    try:
        return from_mapping(data or {}, base=p.parent)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def from_mapping(data: Any, base: Path = Path()) -> WebSecurity:
    if not isinstance(data, dict):
        raise _err("(top level)", "must be a mapping")
    unknown = set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise _err(sorted(unknown)[0], "unknown key; known keys: tls_server_config, basic_auth_users, http_server_config")
    sec = WebSecurity()
    tls = data.get("tls_server_config")
    if tls is not None:
        sec.tls = _tls_context(tls, base)
    http = data.get("http_server_config") or {}
    if not isinstance(http, dict) or set(http) - {"http2", "headers"}:
        raise _err("http_server_config", "may hold only http2 and headers")
    headers = http.get("headers") or {}
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise _err("http_server_config.headers", "must map header names to strings")
    sec.headers = dict(headers)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise _err("basic_auth_users", "must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
            raise _err(f"basic_auth_users.{user}", f"is not a bcrypt hash (plain-text passwords are refused); {HASH_HINT}")
        sec.users[str(user)] = hashed.replace("$2y$", "$2b$", 1).encode()
    if sec.users:
        sec.dummy_hash = _dummy_hash(sec.users)
    return sec


def _file(tls: dict[str, Any], key: str, base: Path) -> str:
    value = tls.get(key)
    if not isinstance(value, str) or not value:
        raise _err(f"tls_server_config.{key}", "required: the path of a PEM file")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise _err(f"tls_server_config.{key}", f"cannot read {path}: {e.strerror or e}") from None
    return str(path)


def _tls_context(tls: Any, base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise _err("tls_server_config", "must be a mapping")
    for key in tls:
        if key in NOT_SUPPORTED:
            raise _err(f"tls_server_config.{key}", "is not supported by pktagent: remove it (OpenSSL's defaults apply)")
        if key not in TLS_KEYS:
            raise _err(f"tls_server_config.{key}", f"unknown key; known keys: {', '.join(sorted(TLS_KEYS))}")
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = _file(tls, "cert_file", base), _file(tls, "key_file", base)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as e:
        raise _err("tls_server_config.cert_file", f"{cert} and {tls['key_file']} are not a matching PEM certificate and key ({e})") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth in ("RequestClientCert", "RequireAnyClientCert"):
        raise _err(
            "tls_server_config.client_auth_type",
            f"{auth} (a certificate asked for but not verified) is not supported: use VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        )
    if auth not in CLIENT_AUTH:
        raise _err("tls_server_config.client_auth_type", f"{auth!r} is not one of {', '.join(CLIENT_AUTH)}")
    ctx.verify_mode = ssl.VerifyMode[CLIENT_AUTH[auth]]
    if "client_ca_file" in tls:
        ca = _file(tls, "client_ca_file", base)
        try:
            ctx.load_verify_locations(ca)
        except ssl.SSLError as e:
            raise _err("tls_server_config.client_ca_file", f"{ca} is not a PEM CA certificate ({e})") from None
    elif auth != "NoClientCert":
        raise _err("tls_server_config.client_ca_file", f"required with client_auth_type {auth}")
    for bound in ("min_version", "max_version"):
        if bound in tls:
            if tls[bound] not in TLS_VERSIONS:
                raise _err(f"tls_server_config.{bound}", f"{tls[bound]!r} is not one of {', '.join(TLS_VERSIONS)}")
            setattr(ctx, "minimum_version" if bound == "min_version" else "maximum_version", ssl.TLSVersion[TLS_VERSIONS[tls[bound]]])
    if "min_version" not in tls:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the exporter-toolkit's default
    return ctx
