"""The command line as a Prometheus user expects it: exporter-toolkit's flag names, one series per name, honest replay output.

Each test runs the installed ``pktagent`` as a subprocess on captures with known answers.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import ROOT, need_root
from known import Known, mixed
from prometheus_client.parser import text_string_to_metric_families
from scrape import get
from test_cli import PKTAGENT, free_port, one_line, pktagent
from waiting import until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"two identical series: {key}"  # promtool does not catch this; we do
            out[key] = s.value
    return out


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Known, Path]:
    k = mixed()
    return k, k.capture.write(tmp_path / "mixed.pcap")


# -- flags (item 1) ---------------------------------------------------------------------------


def test_run_help_lists_the_exporter_toolkit_flags() -> None:
    done = pktagent("run", "--help")
    assert done.returncode == 0
    for flag in ("--web.listen-address HOST:PORT, --listen HOST:PORT", "--web.config.file FILE", "--log.level", "--log.format {logfmt,json}"):
        assert flag in done.stdout, flag


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(("--workers", "0"), "argument --workers: must be an integer between 1 and 64, got 0", id="workers"),
        pytest.param(("--workers", "many"), "argument --workers: must be an integer between 1 and 64, got 'many'", id="workers-text"),
        pytest.param(("--sampling-rate", "2"), "argument --sampling-rate: must be a number between 1e-06 and 1, got 2.0", id="sampling-rate"),
        pytest.param(("--listen", "10469"), "argument --web.listen-address/--listen: '10469' is not HOST:PORT", id="listen"),
        pytest.param(("--web.listen-address", "nohost"), "argument --web.listen-address/--listen: 'nohost' is not HOST:PORT", id="web.listen-address"),
        pytest.param(("--log.format", "xml"), "argument --log.format: invalid choice: 'xml'", id="log.format"),
        pytest.param(("-i", "lo", "--pcap", "a.pcap"), "argument --pcap: not allowed with argument --interface/-i", id="interface-and-pcap"),
    ],
)
def test_a_bad_flag_value_names_the_flag_and_exits_2(args: tuple[str, ...], expected: str) -> None:
    done = pktagent("run", *args)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert line.startswith(f"pktagent run: error: {expected}"), line
    assert line.endswith("(see pktagent run --help)")


def test_flag_and_config_key_share_one_wording_for_ranges(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("capture:\n  workers: 0\n")
    from_file = one_line(pktagent("check-config", str(path)).stderr)
    from_flag = one_line(pktagent("run", "--workers", "0").stderr)
    wording = "must be an integer between 1 and 64, got 0"
    assert from_file.endswith(f"config key capture.workers: {wording}")
    assert f"argument --workers: {wording} " in from_flag


@pytest.mark.parametrize("where", ["after", "before", "old-name-before"])
def test_log_flags_are_accepted_before_or_after_the_command(capture: tuple[Known, Path], where: str) -> None:
    _, path = capture
    flags = {"after": ("--log.level", "warning", "--log.format", "json"), "before": ("--log.format", "json", "--log.level", "warning")}
    if where == "old-name-before":
        done = pktagent("--log-level", "warning", "--log.format", "json", "replay", str(path), str(path))
    elif where == "before":
        done = pktagent(*flags[where], "replay", str(path), str(path))
    else:
        done = pktagent("replay", str(path), str(path), *flags[where])
    assert done.returncode == 0, done.stderr
    record = json.loads(one_line(done.stderr))
    assert (record["level"], record["logger"], record["msg"]) == ("warning", "pktagent", f"replay: {path} is named twice: counting it once")
    assert set(record) == {"time", "level", "logger", "msg"}


def test_log_format_logfmt(capture: tuple[Known, Path]) -> None:
    _, path = capture
    done = pktagent("replay", str(path), str(path), "--log.format", "logfmt")
    line = one_line(done.stderr)
    assert line.startswith("time=")
    assert line.split(" ", 1)[1] == f'level=warning logger=pktagent msg="replay: {path} is named twice: counting it once"'


def test_log_level_after_the_command_wins(capture: tuple[Known, Path]) -> None:
    _, path = capture
    done = pktagent("--log.level", "info", "replay", str(path), str(path), "--log.level", "error")
    assert (done.returncode, done.stderr) == (0, "")  # the warning is below "error"


# -- one series per name (item 4) -----------------------------------------------------------------


def test_replay_of_the_same_file_twice_gives_one_series_per_name(capture: tuple[Known, Path]) -> None:
    k, path = capture
    same = Path(os.path.relpath(path, Path.cwd()))  # the same file under another spelling
    done = pktagent("replay", str(path), str(path), str(same))
    assert done.returncode == 0
    got = samples(done.stdout)
    up = {labels: v for (name, labels), v in got.items() if name == "pktagent_capture_up"}
    assert up == {(("interface", "mixed.pcap"),): 1.0}
    assert got[("pktagent_packets_captured_total", (("interface", "mixed.pcap"),))] == k.frames
    assert done.stderr.splitlines() == [
        f"pktagent: WARNING: replay: {path} is named twice: counting it once",
        f"pktagent: WARNING: replay: {same} is the same file as {path}: counting it once",
    ]


@contextmanager
def running(*args: str, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``pktagent run ARGS`` serving on a free loopback port, stopped (and checked) at the end."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([*PKTAGENT, "run", *args, "--web.listen-address", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        until(lambda: proc.poll() is not None or get(f"{base}/metrics")[0] == 200, "the agent to serve /metrics", timeout=30)
        assert proc.poll() is None, log.read_text()
        yield proc, base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in log.read_text()


def test_run_pcap_of_the_same_file_twice_serves_one_series_and_reports_its_end(capture: tuple[Known, Path], tmp_path: Path) -> None:
    """Also item 8: without --loop the end of the file shows in the log, /health and pktagent_capture_up."""
    k, path = capture
    log = tmp_path / "agent.log"
    with running("--pcap", str(path), str(path), "--state-dir", str(tmp_path / "state"), log=log) as (_, base):
        _, body = until(lambda: (got := get(f"{base}/health"))[0] == 503 and got, "/health to report the end of the file")
        health = json.loads(body)
        message = "mixed.pcap: end of the capture file, nothing more to read (--loop starts it over)"
        assert health["status"] == "down"
        assert [(c["interface"], c["up"], c["error"], c["packets_captured"]) for c in health["captures"]] == [("mixed.pcap", False, message, k.frames)]
        got = samples(get(f"{base}/metrics")[1].decode())
        up = {labels: v for (name, labels), v in got.items() if name == "pktagent_capture_up"}
        assert up == {(("interface", "mixed.pcap"),): 0.0}
        assert got[("pktagent_packets_processed_total", (("interface", "mixed.pcap"),))] == k.frames
    lines = log.read_text().splitlines()
    assert f"pktagent: WARNING: --pcap: {path} is named twice: counting it once" in lines
    assert f"pktagent: INFO: {message}" in lines


def test_run_on_the_same_interface_twice_serves_one_series(tmp_path: Path) -> None:
    need_root()
    with running("-i", "lo", "--interface", "lo", "--state-dir", str(tmp_path / "state"), log=tmp_path / "agent.log") as (_, base):
        got = samples(get(f"{base}/metrics")[1].decode())
    up = {labels: v for (name, labels), v in got.items() if name == "pktagent_capture_up"}
    assert up == {(("interface", "lo"),): 1.0}
    assert "pktagent: WARNING: --interface: lo is named twice: counting it once" in (tmp_path / "agent.log").read_text()


# -- replay output (item 9) -----------------------------------------------------------------------------


def json_value(out: dict, name: str, labels: dict[str, str]) -> float | None:  # type: ignore[type-arg]
    """Where the JSON output keeps the figure of one Prometheus sample (None: a figure it leaves out)."""
    iface = out["interfaces"].get(labels.get("interface", ""), {})
    per_interface = {
        "pktagent_capture_up": "capture_up",
        "pktagent_last_packet_timestamp_seconds": "last_packet_timestamp_seconds",
        "pktagent_packets_captured_total": "packets_captured",
        "pktagent_packets_processed_total": "packets_processed",
        "pktagent_packets_duplicate_total": "packets_duplicate",
        "pktagent_packets_sampled_out_total": "packets_sampled_out",
        "pktagent_unsupported_link_packets_total": "unsupported_link_packets",
    }
    if name in per_interface:
        return iface[per_interface[name]]  # type: ignore[no-any-return]
    if name == "pktagent_packets_dropped_total":
        return iface["packets_dropped"][labels["stage"]]  # type: ignore[no-any-return]
    if name == "pktagent_decode_errors_total":
        return iface["decode_errors"].get(f"{labels['layer']}/{labels['reason']}", 0)  # type: ignore[no-any-return]
    if name in ("pktagent_traffic_packets_total", "pktagent_traffic_bytes_total"):
        cell = {(c["network"], c["transport"], c["direction"]): c for c in iface["traffic"]}[(labels["network"], labels["transport"], labels["direction"])]
        return cell["packets" if "packets" in name else "bytes"]  # type: ignore[no-any-return]
    if name == "pktagent_build_info":
        assert labels == out["build"]
        return 1
    p = out["processing"]
    simple = {
        "pktagent_queue_packets": p["queue_packets"],
        "pktagent_queue_capacity_packets": p["queue_capacity_packets"],
        "pktagent_processing_busy_seconds_total": p["busy_seconds"],
        "pktagent_processing_workers": p["workers"],
        "pktagent_flows_capacity": out["flows"]["capacity"],
        "pktagent_devices_known": out["devices"]["known"],
    }
    if name in simple:
        return simple[name]  # type: ignore[no-any-return]
    for hist in ("batch_processing_seconds", "batch_size_packets"):
        h = p[hist]
        if name == f"pktagent_{hist}_bucket":
            return h["buckets"][labels["le"]]  # type: ignore[no-any-return]
        if name == f"pktagent_{hist}_count":
            return h["count"]  # type: ignore[no-any-return]
        if name == f"pktagent_{hist}_sum":
            return h["sum"]  # type: ignore[no-any-return]
    if name.startswith("pktagent_cache_"):
        field = {"hits_total": "hits", "misses_total": "misses", "evictions_total": "evictions", "entries": "entries", "capacity_entries": "capacity"}
        return out["caches"][labels["cache"]][field[name.removeprefix("pktagent_cache_")]]  # type: ignore[no-any-return]
    if name == "pktagent_flows_active":
        return out["flows"]["active"][labels["transport"]]  # type: ignore[no-any-return]
    if name == "pktagent_flows_started_total":
        return out["flows"]["started"][labels["transport"]]  # type: ignore[no-any-return]
    if name == "pktagent_flows_ended_total":
        return out["flows"]["ended"][labels["transport"]][labels["reason"]]  # type: ignore[no-any-return]
    if name in ("pktagent_device_bytes_total", "pktagent_device_packets_total"):
        return out["devices"]["series"][labels["device"]][f"{labels['direction']}_{'bytes' if 'bytes' in name else 'packets'}"]  # type: ignore[no-any-return]
    if name == "pktagent_remote_bytes_total":
        return out["domains"]["series"][labels["domain"]][f"{labels['direction']}_bytes"]  # type: ignore[no-any-return]
    if name == "pktagent_label_series_dropped_total":
        return out["label_series"][labels["label"]]["dropped"]  # type: ignore[no-any-return]
    if name == "pktagent_label_series_budget":
        return out["label_series"][labels["label"]]["budget"]  # type: ignore[no-any-return]
    if name == "pktagent_learn_packets_total":
        return out["learn_packets"][labels["result"]]  # type: ignore[no-any-return]
    if name == "pktagent_exporter_errors_total":
        return None  # the exporter's own health: a replay prints one snapshot, it has no scrapes to fail
    raise AssertionError(f"the JSON output has no place for {name}")


def test_replay_json_carries_every_figure_of_the_prometheus_output(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    import home  # the demo's capture: named devices and domains

    path = home.write_pcap(tmp_path / "home.pcap", home.home_capture_frames())
    text = pktagent("replay", str(path))
    out = json.loads(pktagent("replay", str(path), "--format", "json").stdout)
    got = samples(text.stdout)
    assert any(name == "pktagent_device_bytes_total" and dict(labels)["device"] == "anna-phone" for name, labels in got)  # names to carry
    assert any(name == "pktagent_remote_bytes_total" and dict(labels)["domain"] == "debian.org" for name, labels in got)
    checked = 0
    for (name, labels), value in got.items():
        if name.startswith("pktagent_batch_processing_seconds") or name == "pktagent_processing_busy_seconds_total":
            continue  # times: two runs differ
        in_json = json_value(out, name, dict(labels))
        if in_json is None:
            continue
        assert in_json == value, (name, labels)
        checked += 1
    assert checked > 100


def test_replay_json_counts_are_integers(capture: tuple[Known, Path]) -> None:
    k, path = capture
    out = json.loads(pktagent("replay", str(path), "--format", "json").stdout)
    iface = out["interfaces"]["mixed.pcap"]
    for key in ("packets_captured", "packets_processed", "traffic_packets", "traffic_bytes"):
        assert type(iface[key]) is int, key
    assert all(type(c["packets"]) is int and type(c["bytes"]) is int for c in iface["traffic"])
    assert (iface["traffic_packets"], iface["traffic_bytes"]) == (k.frames, k.wire_bytes)
    assert type(iface["last_packet_timestamp_seconds"]) is float


def test_replay_progress_ends_at_all_files_with_the_share_of_bytes(capture: tuple[Known, Path], tmp_path: Path) -> None:
    """The progress line goes to a terminal only: stderr here is a pseudo-terminal."""
    k, path = capture
    other = k.capture.write(tmp_path / "other.pcap")
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*PKTAGENT, "replay", str(path), str(other)], stdout=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            assert ready, seen
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the replay is over
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        assert proc.wait(timeout=30) == 0
    # Each update rewrites the line (\r, then erase to its end); the terminal turns the final \n into \r\n.
    last = [part.strip() for part in seen.decode().replace("\x1b[K", "").split("\r") if part.strip()][-1]
    size = path.stat().st_size + other.stat().st_size
    assert last.startswith(f"replay: 2/2 files, 100% of {size / 1000:.1f} KB, {2 * k.frames:,} packets"), last
    assert "left" not in last


def test_progress_line() -> None:
    from agent.cli import progress_line

    assert progress_line(0, [500, 1500], 500, 1000, 2.5e5, 3.2) == "replay: 0/2 files, 25% of 2.0 KB, 1,000 packets, 0.25M packets/s, 3s left"
    assert progress_line(2, [500, 1500], 2000, 4000, 2.5e5, 0.0) == "replay: 2/2 files, 100% of 2.0 KB, 4,000 packets, 0.25M packets/s"
    assert progress_line(0, [10**9], 0, 0, 0.0, None) == "replay: 0/1 files, 0% of 1.0 GB, 0 packets"


# -- check-config (item 12) -------------------------------------------------------------------------


def test_check_config_warns_about_interfaces_this_host_lacks(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("capture:\n  interfaces: [lo, pktnosuch0]\n")
    done = pktagent("check-config", str(path))
    assert (done.returncode, done.stdout) == (0, f"{path}: valid\n")
    line = one_line(done.stderr)
    assert line.startswith(f"pktagent: warning: {path}: config key capture.interfaces[1]: this host has no interface 'pktnosuch0' (it has lo")
    assert line.endswith("); pktagent run would refuse to start on this host")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("capture:\n  interfaces: eth0,lo\n", "config key capture.interfaces: must be a list, such as [eth0, lo], got 'eth0,lo'"),
        ("local_networks: 10.0.0.0/8\n", "config key local_networks: must be a list, such as [10.0.0.0/8], got '10.0.0.0/8'"),
    ],
)
def test_check_config_refuses_a_string_where_a_list_is_expected(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    done = pktagent("check-config", str(path))
    assert done.returncode == 1
    assert one_line(done.stderr) == f"pktagent: ConfigError: {path}: {expected}"


# -- start-up (item 13) ---------------------------------------------------------------------------------


HEAVY = ("numpy", "prometheus_client", "yaml", "opentelemetry", "sqlite3", "pcapy")


@pytest.mark.parametrize(
    ("args", "needed"),
    [
        pytest.param(("--version",), set(), id="version"),
        pytest.param(("run", "--help"), set(), id="run-help"),
        pytest.param(("check-config", "{config}"), {"yaml"}, id="check-config"),  # no filter to compile: no libpcap
    ],
)
def test_a_command_imports_only_what_it_needs(tmp_path: Path, args: tuple[str, ...], needed: set[str]) -> None:
    config = tmp_path / "c.yml"
    config.write_text("flows:\n  max_flows: 1000\n")
    argv = [a.format(config=config) for a in args]
    code = (
        "import sys\nfrom agent.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    imported = set(done.stderr.splitlines()[-1].split())
    # --version may ask libpcap for its version; nothing else it does needs numpy or the exporters.
    assert imported - {"pcapy"} == needed if args == ("--version",) else imported == needed


@pytest.mark.parametrize("key", ["interfaces", "pcap"])
def test_a_config_file_naming_an_interface_or_file_twice_is_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(f"capture:\n  {key}: [a0, b0, a0]\n")
    done = pktagent("check-config", str(path))
    assert done.returncode == 1
    assert one_line(done.stderr) == f"pktagent: ConfigError: {path}: config key capture.{key}[2]: 'a0' is listed twice; list each once"
