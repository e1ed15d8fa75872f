"""The web server's bounds: connections capped and counted exactly, slow and idle clients timed out, no spin out of file descriptors."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_http_server import huge_registry
from waiting import until

from agent.config import WebConfig
from agent.export.server import ACCEPT_BACKOFF, TOO_MANY, MetricsServer

OK = (200, {"status": "ok"})


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for s in opened:
        s.close()


def serve(**limits: object) -> MetricsServer:
    s = MetricsServer("127.0.0.1", 0, lambda names: b"", lambda: OK, limits=WebConfig(**limits))  # type: ignore[arg-type]
    s.start()
    return s


def connect(port: int, opened: list[socket.socket]) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    opened.append(s)
    return s


def read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    return out


def health(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_connections_over_the_cap_are_refused_at_once_and_counted_exactly(sockets: list[socket.socket]) -> None:
    server = serve(max_connections=3, read_timeout_seconds=60)
    try:
        idle = [connect(server.port, sockets) for _ in range(3)]
        until(lambda: server.open_connections == 3, "three connections held")
        refused = [read_all(connect(server.port, sockets)) for _ in range(5)]
        assert refused == [TOO_MANY] * 5
        assert TOO_MANY.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and TOO_MANY.endswith(b"\r\n\r\ntoo many connections\n")
        assert server.rejected()["connection_limit"] == 5
        idle[0].close()
        until(lambda: server.open_connections == 2, "a held connection to be let go")
        assert health(server.port) == 200
        assert server.rejected() == {**dict.fromkeys(server.rejected(), 0), "connection_limit": 5}
    finally:
        server.close()


def test_one_address_cannot_take_every_connection(sockets: list[socket.socket]) -> None:
    server = serve(max_connections=10, max_connections_per_address=2, read_timeout_seconds=60)
    try:
        for _ in range(2):
            connect(server.port, sockets)
        until(lambda: server.open_connections == 2, "two connections held")
        assert read_all(connect(server.port, sockets)) == TOO_MANY
        other = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=("127.0.0.2", 0))
        sockets.append(other)
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(other).startswith(b"HTTP/1.1 200 OK\r\n")
        assert (server.rejected()["address_limit"], server.rejected()["connection_limit"]) == (1, 0)
    finally:
        server.close()


def test_a_client_trickling_its_request_is_cut_off_at_the_read_timeout(sockets: list[socket.socket]) -> None:
    """Slowloris: a byte every 50 ms keeps a per-recv timeout from ever firing; the whole head has a deadline."""
    server = serve(read_timeout_seconds=0.5)
    try:
        s = connect(server.port, sockets)
        s.settimeout(0.05)
        closed = False
        for b in b"GET /health HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 400:  # 20 s at this pace if let through
            try:
                s.sendall(bytes([b]))
                closed = s.recv(100) == b""
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
            if closed:
                break
        assert closed
        until(lambda: server.open_connections == 0, "the connection to be closed")
        assert server.rejected()["read_timeout"] == 1
    finally:
        server.close()


def test_silent_and_idle_connections_are_closed_and_counted(sockets: list[socket.socket]) -> None:
    server = serve(read_timeout_seconds=0.3, idle_timeout_seconds=0.3)
    try:
        silent = connect(server.port, sockets)  # never sends anything
        kept = connect(server.port, sockets)
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_all(kept)  # answered, then closed once idle
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b'"ok"\n}\n')
        assert read_all(silent) == b""
        until(lambda: server.open_connections == 0, "both connections closed")
        assert (server.rejected()["read_timeout"], server.rejected()["idle_timeout"]) == (1, 1)
    finally:
        server.close()


SERVER_LOW_ON_FDS = """
import json, resource, sys, time
from agent.config import WebConfig
from agent.export.server import MetricsServer
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
s = MetricsServer("127.0.0.1", 0, lambda names: b"", lambda: (200, {}), limits=WebConfig(
    max_connections=1000, max_connections_per_address=1000, read_timeout_seconds=120))
s.start()
print(s.port, flush=True)
for line in sys.stdin:
    print(json.dumps({"t": time.monotonic(), "open": s.open_connections, **s.rejected()}), flush=True)
s.close()
"""


def test_out_of_file_descriptors_the_server_pauses_instead_of_spinning_and_recovers(sockets: list[socket.socket]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SERVER_LOW_ON_FDS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def stats() -> dict[str, float]:
        stdin.write("\n")
        stdin.flush()
        result: dict[str, float] = json.loads(stdout.readline())
        return result

    try:
        port = int(stdout.readline())
        for _ in range(80):  # more than the 64 descriptors the server may have
            connect(port, sockets)
        first = until(lambda: (st := stats())["accept_failed"] >= 2 and st, "accepting to fail for want of descriptors")
        later = until(lambda: (st := stats())["t"] - first["t"] >= 1.0 and st, "a second to pass")
        # At most one attempt per back-off pause: a spinning loop makes thousands a second.
        assert later["accept_failed"] - first["accept_failed"] <= (later["t"] - first["t"]) / ACCEPT_BACKOFF + 2
        assert proc.poll() is None
        for s in sockets:
            s.close()
        until(lambda: stats()["open"] == 0, "the held connections to close")
        assert health(port) == 200  # and it serves again
    finally:
        stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        stdout.close()
    assert proc.returncode == 0


def test_a_slow_reader_of_the_response_is_dropped_at_the_write_timeout(sockets: list[socket.socket]) -> None:
    big = huge_registry()
    server = MetricsServer("127.0.0.1", 0, big, lambda: OK, limits=WebConfig(write_timeout_seconds=0.3))
    server.start()
    try:
        s = socket.socket()
        sockets.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        s.connect(("127.0.0.1", server.port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")  # and then never read
        started = time.monotonic()
        until(lambda: server.rejected()["write_timeout"] == 1, "the write to time out", timeout=30)
        until(lambda: server.open_connections == 0, "the connection to be closed")
        assert time.monotonic() - started > 0.3
    finally:
        server.close()


def test_run_pcap_loop_survives_a_connection_flood_with_few_descriptors(tmp_path: Path) -> None:
    """``pktagent run --pcap --loop`` limited to 128 descriptors, 200 idle connections from 20 addresses: it keeps replaying."""
    from conftest import need_tool
    from known import mixed
    from prometheus_client.parser import text_string_to_metric_families
    from test_prometheus_server import free_port, get, process

    need_tool("prlimit")
    capture = mixed().capture.write(tmp_path / "mixed.pcap")
    port = free_port()
    args = ["prlimit", "--nofile=128:128", "--", str(Path(sys.executable).parent / "pktagent"), "run", "--pcap", str(capture), "--loop"]
    args += ["--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "state")]

    def figures() -> dict[tuple[str, str], float]:
        status, body = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        return {
            (s.name, s.labels.get("reason", "")): s.value
            for f in text_string_to_metric_families(body.decode())
            for s in f.samples
            if s.name in ("pktagent_http_rejected_total", "pktagent_packets_captured_total")
        }

    opened: list[socket.socket] = []
    with process(args, tmp_path / "agent.log", stop_within=5) as agent:
        until(lambda: agent.poll() is not None or get(f"http://127.0.0.1:{port}/health")[0] == 200, "the agent to serve", timeout=30)
        try:
            for k in range(200):
                opened.append(socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(f"127.0.1.{k % 20 + 1}", 0)))
            refused = [s for s in opened if s.recv(100).startswith(b"HTTP/1.1 503")]
            assert len(refused) == 200 - 64
        finally:
            for s in opened:
                s.close()
        first = until(lambda: (f := figures()) and f, "a scrape once the flood is gone")
        later = until(lambda: (f := figures())[("pktagent_packets_captured_total", "")] > first[("pktagent_packets_captured_total", "")] and f, "more packets")
        assert later[("pktagent_http_rejected_total", "connection_limit")] == 200 - 64
        assert agent.poll() is None
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log and "Too many open files" not in log


LOOP_WITHOUT_DESCRIPTORS = """
import os, sys
from pathlib import Path
from agent.errors import CaptureError
from agent.capture.offline import FileSource
results = []
for free in range(0, 6):
    src = FileSource(Path(sys.argv[1]), loop=True)
    first = src.read(100_000, 0.01)
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    for fd in held[len(held) - free:] if free else []:
        os.close(fd)
    held = held[: len(held) - free] if free else held
    try:
        again = src.read(100_000, 0.01)  # the end of the file: it is opened again to loop
        outcome = "read" if again is not None else "none"
    except CaptureError as e:
        outcome = "CaptureError"
    except OSError as e:
        outcome = "OSError"
    for fd in held:
        os.close(fd)
    src.close()
    results.append(outcome)
print(" ".join(results))
"""


def test_a_looped_file_out_of_descriptors_is_a_capture_error_the_engine_retries(tmp_path: Path) -> None:
    """Reopening a file to loop with 0-5 descriptors free: a CaptureError (retried with backoff), never an OSError that kills the agent."""
    from known import mixed

    capture = mixed().capture.write(tmp_path / "mixed.pcap")
    out = subprocess.run([sys.executable, "-c", LOOP_WITHOUT_DESCRIPTORS, str(capture)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # Two descriptors let the file be opened again (libpcap's handle and the map of the file).
    assert out.stdout.split() == ["CaptureError", "CaptureError", "read", "read", "read", "read"]
