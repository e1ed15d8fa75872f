"""A live agent in a network namespace, fed by tcpreplay at a steady rate: the scrape-storm and soak tests' harness (and bench/soak.py's).

``LiveAgent`` runs ``pktagent run`` on the receiver end of a ``netns.VethPair`` and reads
``/metrics`` from inside that namespace; ``Replay`` sends a capture from the sender end with
``tcpreplay --pps R --loop N``; ``rss_tree`` reads the resident memory of the agent and of every
process it forked. ``unique_home_mix`` is W1 of ``bench/workloads.py`` without the copies a
router forwarded, so no frame repeats within a pass and a replay looped N times must count
exactly N times each figure of one pass. Traffic stays inside the two namespaces.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netns import VethPair
from scrape import Samples, samples
from waiting import until

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PORT = 10464  # the receiver namespace is new: nothing else listens there
FETCH = """
import sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(sys.argv[1], timeout=10)
except urllib.error.HTTPError as e:
    r = e
sys.stdout.write(str(r.status) + "\\n" + r.read().decode())
"""
COUNTS = ("captured", "processed", "duplicate", "sampled_out", "unsupported")


def parse(text: str) -> Samples:
    return samples(text)


def counts(samples: Samples, interface: str) -> dict[str, float]:
    """The accounting figures of one interface: captured, processed, duplicate, sampled out, unsupported, and drops by stage."""
    one = (("interface", interface),)
    out = {
        "captured": samples.get(("pktagent_packets_captured_total", one), 0.0),
        "processed": samples.get(("pktagent_packets_processed_total", one), 0.0),
        "duplicate": samples.get(("pktagent_packets_duplicate_total", one), 0.0),
        "sampled_out": samples.get(("pktagent_packets_sampled_out_total", one), 0.0),
        "unsupported": samples.get(("pktagent_unsupported_link_packets_total", one), 0.0),
    }
    for stage in ("kernel", "interface", "queue", "reopen"):
        out[f"dropped_{stage}"] = samples.get(("pktagent_packets_dropped_total", (("interface", interface), ("stage", stage))), 0.0)
    out["traffic_packets"] = sum(v for (n, ls), v in samples.items() if n == "pktagent_traffic_packets_total" and dict(ls).get("interface") == interface)
    out["traffic_bytes"] = sum(v for (n, ls), v in samples.items() if n == "pktagent_traffic_bytes_total" and dict(ls).get("interface") == interface)
    return out


def cells(samples: Samples, interface: str, metric: str = "pktagent_traffic_packets_total") -> dict[tuple[str, str, str], float]:
    """(network, transport, direction) -> value of a traffic metric for one interface (cells with a value only)."""
    out = {}
    for (n, ls), v in samples.items():
        d = dict(ls)
        if n == metric and d.get("interface") == interface and v:
            out[(d["network"], d["transport"], d["direction"])] = v
    return out


# -- processes ------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the agent forks reader and worker processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has stopped: only its parent has still to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def status_kb(pid: int, field: str = "VmRSS") -> int:
    """A field of /proc/PID/status in kB (0 when the process has gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else 0


def rss_tree(pid: int) -> dict[int, int]:
    """VmRSS in kB of ``pid`` and of each of its descendants."""
    return {p: status_kb(p) for p in [pid, *children(pid)]}


# -- the agent ------------------------------------------------------------------------------------


class LiveAgent:
    """``pktagent run`` in the receiver namespace, and HTTP GETs from inside it."""

    def __init__(self, pair: VethPair, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.pair, self.proc, self.log = pair, proc, log

    @property
    def pid(self) -> int:
        return self.proc.pid  # `ip netns exec` execs the command: this is the agent itself

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{PORT}{path}"

    def get(self, path: str) -> tuple[int, str]:
        done = subprocess.run(self.pair.in_receiver(sys.executable, "-c", FETCH, self.url(path)), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            return 0, done.stderr  # not serving yet
        status, _, body = done.stdout.partition("\n")
        return int(status), body

    def metrics(self) -> Samples:
        status, body = self.get("/metrics")
        if status != 200:
            raise AssertionError(f"/metrics answered {status}: {body[-500:]}")
        return parse(body)

    def wait_accounted(self, interface: str, sent: int, timeout: float = 30.0) -> Samples:
        """/metrics once every packet sent has been captured or dropped, and everything captured is accounted for
        (or, on timeout, the last figures: the caller's exact assertions then say what is missing)."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.metrics()
            c = counts(samples, interface)
            seen = c["captured"] + c["dropped_kernel"] + c["dropped_interface"]
            accounted = c["processed"] + c["duplicate"] + c["sampled_out"] + c["unsupported"] + c["dropped_queue"]
            if (seen >= sent and accounted == c["captured"]) or time.monotonic() > deadline:
                return samples
            time.sleep(0.2)

    def stop(self, within: float = 2.0) -> str:
        """SIGTERM, which must end the agent cleanly within ``within`` seconds (the README promises 2); returns its log."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the agent did not stop within {within:g} s of SIGTERM") from None
        log = self.log.read_text()
        if code != 0 or "Traceback" in log:
            raise AssertionError(f"the agent exited with {code}:\n{log}")
        return log


@contextmanager
def live_agent(pair: VethPair, workdir: Path, *args: str, interfaces: Sequence[str] | None = None, timeout: float = 20.0) -> Iterator[LiveAgent]:
    """An agent capturing on ``interfaces`` (default: ``pair.rx``), serving on the receiver namespace's loopback, until the block ends."""
    log = workdir / "agent.log"
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    capture = [a for i in (interfaces if interfaces is not None else [pair.rx]) for a in ("-i", i)]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            pair.in_receiver(str(BIN / "pktagent"), "run", *capture, "--listen", f"127.0.0.1:{PORT}", "--state-dir", str(state), *args),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    agent = LiveAgent(pair, proc, log)
    try:
        # Serving, and every capture open and reading.
        try:
            until(lambda: proc.poll() is not None or agent.get("/health")[0] == 200, "/health", timeout)
        except AssertionError:
            raise AssertionError(f"the agent did not serve /health with its captures up:\n{log.read_text()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"the agent did not start:\n{log.read_text()}")
        yield agent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


# -- sending --------------------------------------------------------------------------------------


class Replay:
    """``tcpreplay --pps`` of a capture, looped, from the sender namespace (started at once, in the background)."""

    def __init__(self, pair: VethPair, path: Path, *, pps: int, loops: int) -> None:
        cmd = ["tcpreplay", "-i", pair.tx, "--preload-pcap", f"--pps={pps}", *([f"--loop={loops}"] if loops > 1 else []), str(path)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(pair.in_sender(*cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.seconds = 0.0

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Packets sent (tcpreplay's count; it must report no failure)."""
        out, err = self.proc.communicate(timeout=timeout)
        self.seconds = time.monotonic() - self.started
        if self.proc.returncode != 0:
            raise AssertionError(f"tcpreplay failed ({self.proc.returncode}): {err}")
        sent = re.search(r"Successful packets:\s+(\d+)", out)
        failed = re.search(r"Failed packets:\s+(\d+)", out)
        if sent is None or failed is None or int(failed.group(1)) != 0:
            raise AssertionError(f"tcpreplay did not send everything:\n{out}\n{err}")
        return int(sent.group(1))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# -- the workload ---------------------------------------------------------------------------------


@dataclass
class Workload:
    """A capture of frames that never repeat within a pass, and what one pass must count."""

    path: Path
    frames: int
    wire_bytes: int
    packets_by_cell: dict[tuple[str, str, str], int]
    bytes_by_cell: dict[tuple[str, str, str], int]


def unique_home_mix(out: Path, packets: int) -> Workload:
    """W1 (the home mix: IPv4 and IPv6, TCP, UDP, ICMP, VLAN tags, DNS answers) without the copies a router
    forwarded (TTL 63), written to ``out``; every frame differs from every other at the network layer."""
    import numpy as np
    import workloads  # the benchmark's generator

    cols, _ = workloads.home_mix(packets)
    original = np.flatnonzero(cols.ttl == 64)
    cols = workloads.Packets(**{f.name: getattr(cols, f.name)[original] for f in dataclasses.fields(workloads.Packets)})
    workloads.write_pcap(out, cols)
    l2, hdrs = workloads.header_lengths(cols)
    wire = np.maximum(cols.frame_len, l2 + hdrs)
    network = np.where(cols.v6, "ipv6", "ipv4")
    transport = np.select([cols.proto == 6, cols.proto == 17, cols.proto == 1, cols.proto == 58], ["tcp", "udp", "icmp", "icmpv6"], "other")

    # Local: 192.168.0.0/16 and fd00::/8 here (the generator's remote addresses are in 11.0.0.0 - 99.255.255.255 and 2001:db8::/32).
    def local(hi: Any, lo: Any, v6: Any) -> Any:
        return np.where(v6, (hi >> np.uint64(56)) == 0xFD, (lo >> np.uint64(16)) == 0xC0A8)

    src, dst = local(cols.src_hi, cols.src_lo, cols.v6), local(cols.dst_hi, cols.dst_lo, cols.v6)
    direction = np.select([src & dst, src, dst], ["internal", "outbound", "inbound"], "external")
    by_packets: dict[tuple[str, str, str], int] = {}
    by_bytes: dict[tuple[str, str, str], int] = {}
    for n, t, d, w in zip(network.tolist(), transport.tolist(), direction.tolist(), wire.tolist()):
        by_packets[(n, t, d)] = by_packets.get((n, t, d), 0) + 1
        by_bytes[(n, t, d)] = by_bytes.get((n, t, d), 0) + w
    return Workload(out, int(original.size), int(wire.sum()), by_packets, by_bytes)


def scaled(cells_: dict[tuple[str, str, str], int], times: int) -> dict[tuple[str, str, str], float]:
    return {k: float(v * times) for k, v in cells_.items()}
