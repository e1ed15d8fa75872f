"""The secured endpoint: exporter-toolkit web config, TLS, mutual TLS, basic auth, 401/404/400."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from certs import Pki, make_pki

from agent.errors import ConfigError
from agent.export import web
from agent.export.server import MetricsServer

HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "web.yml"
    f.write_text(text)
    return f


def serve(security: web.WebSecurity) -> MetricsServer:
    s = MetricsServer("127.0.0.1", 0, lambda names: b"", lambda: (200, {"status": "ok"}), security=security)
    s.start()
    return s


def get(server: MetricsServer, path: str, *, ctx: ssl.SSLContext | None = None, auth: tuple[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn = (
        http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
        if ctx
        else http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    )
    headers = {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()} if auth else {}
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


def client_ctx(pki: Pki, with_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return ctx


@pytest.fixture
def tls_auth_server(pki: Pki, tmp_path: Path) -> Iterator[MetricsServer]:
    cfg = write(tmp_path, f"tls_server_config: {{cert_file: {pki.server_cert}, key_file: {pki.server_key}}}\nbasic_auth_users: {{prometheus: '{HASH}'}}\n")
    s = serve(web.load(cfg))
    yield s
    s.close()


def test_tls_with_basic_auth(tls_auth_server: MetricsServer, pki: Pki) -> None:
    ctx = client_ctx(pki)
    status, body, _ = get(tls_auth_server, "/metrics", ctx=ctx, auth=("prometheus", "s3cret"))
    assert status == 200
    status, body, headers = get(tls_auth_server, "/metrics", ctx=ctx, auth=("prometheus", "wrong"))
    assert (status, body, headers["WWW-Authenticate"]) == (401, b"Unauthorized\n", 'Basic realm="pktagent"')
    assert get(tls_auth_server, "/health", ctx=ctx)[:2] == (401, b"Unauthorized\n")  # nothing else is revealed
    assert get(tls_auth_server, "/nope", ctx=ctx)[0] == 401
    assert get(tls_auth_server, "/nope", ctx=ctx, auth=("prometheus", "s3cret"))[0] == 404
    assert get(tls_auth_server, "/", ctx=ctx, auth=("nobody", "s3cret"))[0] == 401
    assert b'href="metrics"' in get(tls_auth_server, "/", ctx=ctx, auth=("prometheus", "s3cret"))[1]


def test_plain_http_to_a_tls_port_fails_cleanly(tls_auth_server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", tls_auth_server.port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = s.recv(1000)
    assert answer.startswith(b"HTTP/1.0 400 Bad Request")
    assert answer.endswith(b"Client sent an HTTP request to an HTTPS server.\n")


def test_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        f"tls_server_config:\n  cert_file: {pki.server_cert}\n  key_file: {pki.server_key}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki.ca}\n",
    )
    s = serve(web.load(cfg))
    try:
        assert get(s, "/metrics", ctx=client_ctx(pki, with_cert=True))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
            get(s, "/metrics", ctx=client_ctx(pki))
    finally:
        s.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}", "tls_server_config.cert_file: cannot read /nope.crt: No such file or directory"),
        ("tls_server_config: {cert_file: CERT, key_file: /root/unreadable.key}", "tls_server_config.key_file: cannot read /root/unreadable.key"),
        ("tls_server_config: {cert_file: CERT, key_file: CERT}", "are not a matching PEM certificate and key"),
        ("basic_auth_users: {alice: hunter2}", "basic_auth_users.alice: is not a bcrypt hash (plain-text passwords are refused)"),
        ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: RequireAndVerifyClientCert}", "client_ca_file: required with client_auth_type"),
        ("tls_server_config: {cert_file: CERT, key_file: KEY, client_auth_type: Sometimes}", "'Sometimes' is not one of NoClientCert"),
        ("tls_server_config: {cert_file: CERT, key_file: KEY, min_version: TLS99}", "min_version: 'TLS99' is not one of TLS10"),
        ("tls_server_config: {cert_file: CERT, key_file: KEY, cipher_suites: [x]}", "cipher_suites: is not supported by pktagent"),
        ("tls_config: {}", "web config key tls_config: unknown key"),
    ],
)
def test_bad_web_config_is_an_error_at_start(pki: Pki, tmp_path: Path, text: str, message: str) -> None:
    f = write(tmp_path, text.replace("CERT", str(pki.server_cert)).replace("KEY", str(pki.server_key)))
    with pytest.raises(ConfigError) as e:
        web.load(f)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_verified_credentials_are_cached_but_bounded() -> None:
    sec = web.from_mapping({"basic_auth_users": {"u": HASH}})
    good = "Basic " + base64.b64encode(b"u:s3cret").decode()
    assert sec.check(good) and sec.check(good)
    assert not sec.check("Basic " + base64.b64encode(b"u:nope").decode())
    assert not sec.check("Basic !!!") and not sec.check("Bearer x") and not sec.check(None)
    assert len(sec._verified) == 1


def test_wrong_passwords_are_checked_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A storm of bad credentials runs bcrypt on one thread at a time, so it can take one core at most."""
    import threading
    import time

    sec = web.from_mapping({"basic_auth_users": {"u": HASH}})
    sec.gate = web.AuthGate(8)  # room for all eight: here every one is checked
    running, most, lock = [0], [0], threading.Lock()
    real = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        try:
            return real(password, hashed)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(bcrypt, "checkpw", counting_checkpw)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda i=i: results.append(sec.check("Basic " + base64.b64encode(f"u:wrong{i}".encode()).decode()))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 8
    assert most[0] == 1
    assert len(sec._verified) == 0  # failures are never remembered
