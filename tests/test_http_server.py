"""The endpoint as a scraper sees it: gzip, keep-alive, headers, 405, the landing page, the telemetry path, name[] filtering."""

from __future__ import annotations

import gzip
import http.client
import logging
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.base import labels
from agent.base.snapshot import Snapshot
from agent.config import Config, WebConfig
from agent.errors import ConfigError
from agent.export.metrics import Exposition
from agent.export.server import MetricsServer, accepts_gzip, address_family

HEALTH = {"status": "ok", "version": "9.8.7", "captures": [{"interface": "eth<0>", "up": True, "error": None, "packets_captured": 1234}]}


def snapshot() -> Snapshot:
    """Two interfaces with known figures and every cell of the traffic counters filled (a large exposition)."""
    zeros = np.zeros(2, np.int64)
    traffic = np.arange(2 * 4 * 6 * 5, dtype=np.float64).reshape(2, 4, 6, 5) + 1
    return Snapshot(
        interfaces=("eth0", "wlan0"),
        version="9.8.7",
        captured=np.array([5, 7]),
        capture_up=np.array([1, 0]),
        last_packet_seconds=np.zeros(2),
        processed=zeros,
        duplicate=zeros,
        sampled_out=zeros,
        unsupported_link=zeros,
        dropped=np.zeros((2, 3), np.int64),
        decode_errors=np.zeros((2, len(labels.DECODE_ERRORS)), np.int64),
        traffic_packets=traffic,
        traffic_bytes=traffic * 100,
    )


def registry() -> Callable[[Collection[str] | None], bytes]:
    return Exposition(snapshot).render


def huge_registry() -> Callable[[Collection[str] | None], bytes]:
    """One metric with a 16 MB help text: more than any socket buffer holds, and cheap to build."""
    text = b"# HELP big " + b"x" * (16 << 20) + b"\n# TYPE big gauge\nbig 1.0\n"
    return lambda names: text


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    s = MetricsServer("127.0.0.1", 0, registry(), lambda: (200, HEALTH), limits=WebConfig(telemetry_path="/probe/metrics"))
    s.start()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _closed_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every HTTPConnection a test opens is closed at its end (no ResourceWarning)."""
    opened: list[http.client.HTTPConnection] = []
    real = http.client.HTTPConnection.connect

    def connect(self: http.client.HTTPConnection) -> None:
        opened.append(self)
        real(self)

    monkeypatch.setattr(http.client.HTTPConnection, "connect", connect)
    yield
    for c in opened:
        c.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}


def test_gzip_when_accepted_decodes_to_the_plain_exposition(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    status, plain, headers = request(conn, "GET", "/probe/metrics")
    assert status == 200 and "content-encoding" not in headers
    status, packed, headers = request(conn, "GET", "/probe/metrics", {"Accept-Encoding": "gzip, deflate"})
    assert (status, headers["content-encoding"], headers["vary"]) == (200, "gzip", "Accept-Encoding")
    assert int(headers["content-length"]) == len(packed) < len(plain) / 3
    assert gzip.decompress(packed) == plain
    assert b"pktagent_packets_captured_total" in plain
    assert request(conn, "GET", "/probe/metrics", {"Accept-Encoding": "gzip;q=0, identity"})[2].get("content-encoding") is None
    conn.close()


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [("gzip", True), ("GZIP;q=0.5", True), ("br, *", True), ("gzip;q=0", False), ("identity", False), ("", False), ("gzip;q=x", False)],
)
def test_accept_encoding(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_keep_alive_serves_several_requests_on_one_connection(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.sock = sock  # the same socket throughout: a closed connection would fail the next request
        answers = [request(conn, "GET", path) for path in ("/probe/metrics", "/health", "/", "/nope", "/probe/metrics")]
    assert [a[0] for a in answers] == [200, 200, 200, 404, 200]
    assert all(a[2].get("connection") != "close" for a in answers)
    assert server.open_connections <= 1


def test_server_header_has_no_trailing_space_and_no_python(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert request(conn, "GET", "/health")[2]["server"] == "pktagent"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(4096).split(b"\r\n\r\n")[0]
    assert b"\r\nServer: pktagent\r\n" in head and head.startswith(b"HTTP/1.1 200 OK\r\n")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_methods_get_a_plain_text_405(server: MetricsServer, method: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    status, body, headers = request(conn, method, "/probe/metrics")
    assert (status, body, headers["content-type"], headers["allow"]) == (405, b"Method Not Allowed\n", "text/plain; charset=utf-8", "GET, HEAD")


def test_head_has_the_length_but_no_body(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    plain = request(conn, "GET", "/probe/metrics")[1]
    status, body, headers = request(conn, "HEAD", "/probe/metrics")
    assert (status, body, int(headers["content-length"])) == (200, b"", len(plain))


def test_a_bad_request_is_answered_in_plain_text(server: MetricsServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")  # more than the stdlib's 100 headers
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 431 ") and b"Content-Type: text/plain" in answer and b"<html" not in answer.lower()


def test_the_landing_page_shows_version_captures_and_links(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    status, body, _ = request(conn, "GET", "/")
    page = body.decode()
    assert status == 200
    assert "version 9.8.7" in page
    assert "<td>eth&lt;0&gt;</td><td>up</td><td>1234</td>" in page  # escaped: names come from the host
    assert 'href="probe/metrics"' in page and 'href="health"' in page


def test_the_telemetry_path_serves_the_metrics_and_only_it(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    assert request(conn, "GET", "/probe/metrics?x=1")[0] == 200
    assert request(conn, "GET", "/metrics")[:2] == (404, b"404 page not found\n")


@pytest.mark.parametrize("bad", ["metrics", "/", "/health", "/a b", "/m?x"])
def test_a_bad_telemetry_path_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.telemetry_path"):
        Config().replace("web", telemetry_path=bad)


def test_name_filter_keeps_only_the_named_series(server: MetricsServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    q = "name[]=pktagent_capture_up&name[]=pktagent_packets_captured_total"
    body = request(conn, "GET", f"/probe/metrics?{q}")[1].decode()
    samples = sorted((s.name, s.labels["interface"], s.value) for f in text_string_to_metric_families(body) for s in f.samples)
    assert samples == [
        ("pktagent_capture_up", "eth0", 1.0),
        ("pktagent_capture_up", "wlan0", 0.0),
        ("pktagent_packets_captured_total", "eth0", 5.0),
        ("pktagent_packets_captured_total", "wlan0", 7.0),
    ]


def test_the_address_family_comes_from_the_address() -> None:
    assert address_family("127.0.0.1", 0) == socket.AF_INET
    assert address_family("::1", 0) == socket.AF_INET6
    assert address_family("localhost", 0) == socket.AF_INET  # a name, no colon: resolved, IPv4 first
    s = MetricsServer("::1", 0, registry(), lambda: (200, HEALTH))
    s.start()
    try:
        conn = http.client.HTTPConnection("::1", s.port, timeout=5)
        assert request(conn, "GET", "/health")[0] == 200
    finally:
        s.close()
    with pytest.raises(ConfigError, match=r"cannot listen on no-such-host\.invalid:0"):
        MetricsServer("no-such-host.invalid", 0, registry(), lambda: (200, HEALTH))


def test_a_failing_snapshot_breaks_one_part_not_the_scrape() -> None:
    """The snapshot source raising: the scrape still answers, with the failure counted, and other collectors whole."""
    calls = [0]

    def source() -> Snapshot:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("pipeline gone")
        return snapshot()

    exposition = Exposition(source, extra=lambda: [("other_part", "Another part.", "gauge", [("other_part", (), 3)])])
    first = exposition.render().decode()
    errors = {s.labels["collector"]: s.value for f in text_string_to_metric_families(first) if f.name == "pktagent_exporter_errors" for s in f.samples}
    assert errors["snapshot"] == 1 and sum(errors.values()) == 1
    assert "other_part 3.0" in first and "pktagent_packets_captured_total" not in first
    second = exposition.render().decode()
    assert 'pktagent_packets_captured_total{interface="eth0"} 5.0' in second
    assert 'pktagent_exporter_errors_total{collector="snapshot"} 1.0' in second


@pytest.mark.parametrize("tls", [False, True])
def test_a_client_leaving_mid_response_is_one_debug_line(
    tls: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    big = huge_registry()
    security, ctx = None, None
    if tls:
        from certs import make_pki

        from agent.export import web

        pki = make_pki(tmp_path)
        security = web.from_mapping({"tls_server_config": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}})
        ctx = ssl.create_default_context(cafile=str(pki.ca))
    s = MetricsServer("127.0.0.1", 0, big, lambda: (200, HEALTH), security=security)
    s.start()
    caplog.set_level(logging.DEBUG, logger="pktagent.server")
    try:
        leave_mid_response(s.port, ctx)
        from waiting import until

        until(lambda: s.open_connections == 0, "the connection to be closed")
    finally:
        s.close()
    lines = [r for r in caplog.records if r.name == "pktagent.server" and "went away" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in capfd.readouterr().err


def leave_mid_response(port: int, ctx: ssl.SSLContext | None = None) -> None:
    import struct

    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if ctx else raw
    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    sock.close()


def test_run_serves_metrics_at_the_telemetry_path_flag(tmp_path: Path) -> None:
    """``pktagent run --web.telemetry-path``: the real command serves there, and not at /metrics."""
    from known import mixed
    from test_prometheus_server import free_port, get, process
    from waiting import until

    capture = mixed().capture.write(tmp_path / "mixed.pcap")
    port = free_port()
    args = [str(Path(sys.executable).parent / "pktagent"), "run", "--pcap", str(capture), "--listen", f"127.0.0.1:{port}"]
    args += ["--state-dir", str(tmp_path / "state"), "--web.telemetry-path", "/x/metrics"]
    with process(args, tmp_path / "agent.log", stop_within=5) as agent:
        # /health, not 200 here: a file replayed without --loop ends at once (its capture is down then).
        until(lambda: agent.poll() is not None or get(f"http://127.0.0.1:{port}/health")[0] in (200, 503), "the agent to serve", timeout=30)
        status, body = get(f"http://127.0.0.1:{port}/x/metrics")
        assert status == 200 and b"pktagent_packets_captured_total" in body
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    assert f"serving http://127.0.0.1:{port}/x/metrics" in (tmp_path / "agent.log").read_text()
    bad = subprocess.run([*args[:2], "--web.telemetry-path", "metrics"], capture_output=True, text=True)
    assert bad.returncode == 2 and "argument --web.telemetry-path: 'metrics' must be a path" in bad.stderr and "Traceback" not in bad.stderr


def _wakes(tid: int) -> int:
    """How many times thread ``tid`` of this process has gone to sleep and been woken (voluntary context switches)."""
    with open(f"/proc/self/task/{tid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))


def _asleep(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def test_an_idle_server_thread_sleeps_until_a_connection_or_close() -> None:
    """socketserver's own loop woke twice a second to look for a shutdown: an idle agent's HTTP thread does not."""
    from waiting import until

    server = MetricsServer("127.0.0.1", 0, lambda names: b"up 1\n", lambda: (200, {}))
    server.start()
    assert server._thread is not None and server._thread.native_id is not None
    tid = server._thread.native_id
    until(lambda: _asleep(tid), "the HTTP thread to wait for a connection")
    before = _wakes(tid)
    time.sleep(1.6)  # socketserver's loop (poll_interval 0.5) wakes three times in this
    assert _wakes(tid) == before
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    assert conn.getresponse().read() == b"up 1\n"
    conn.close()
    until(lambda: _wakes(tid) > before and _asleep(tid), "the connection to wake the HTTP thread, and it to wait again")
    server.close()
    assert not server._thread.is_alive()  # and so does close, at once
