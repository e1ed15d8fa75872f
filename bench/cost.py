"""Live cost benchmark: CPU per packet and memory of pktagent, softflowd and tcpdump on the same traffic.

Two network namespaces joined by a veth pair (made here, deleted at the end: nothing leaves
them). A held-out home mix (``workloads.home_mix`` with a seed the offline benchmark does not
use) is sent by ``tcpreplay --preload-pcap --pps=R`` from one end; each capturer runs alone on
the other end, in turn, on the same packets:

* ``pktagent run -i rx`` with the default config and one worker;
* ``softflowd -i rx -6 -d`` (exporting NetFlow to a closed port on the receiver's loopback);
* ``tcpdump -i rx -w /dev/null``.

For each it reads, from /proc, the user + system CPU time of its whole process tree from just
before the send until SETTLE seconds after it (the time to hand over the last batch: pktagent's
documented maximum latency is 1 s), and reports CPU seconds per million packets sent and the
peak RSS (the sum of VmHWM over the tree). Packets lost: *counted* is what the capturer itself
reports dropped (pktagent's ``pktagent_packets_dropped_total``, tcpdump's "dropped by kernel",
softflowd's "Packets dropped"); *uncounted* is sent minus what it reports received and dropped.
Then pktagent alone on an idle link for IDLE seconds: the share of a core it uses, and its RSS.

Each (rate, capturer) is measured ``--repeat`` times, interleaved (pktagent, softflowd,
tcpdump, pktagent, ...); the median is reported. Needs root, tcpreplay, softflowd, tcpdump and
iproute2. Writes ``bench/results/cost.json``.

It starts by emptying the page cache (``--keep-page-cache`` not to). On the build VM (Linux
6.18, ext4), libraries written shortly before, such as a venv installed a minute ago, cost the
processes that map them more RSS until the cache is emptied: numpy's import 30.5 MB instead
of 25-26, an idle agent 43.8 MiB instead of 36.6. A reboot does the same; a long-installed agent
does not see it.

To compare two checkouts, run each one's code from its own directory (``python -m agent``
imports the package from the current directory first):

    sudo python bench/cost.py --only pktagent --agent "env -C ../other $PWD/.venv/bin/python -m agent"

    sudo make bench-cost
    sudo python bench/cost.py --rates 5000 20000 --repeat 3 --idle 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
from live import PORT, metrics  # noqa: E402 - the live benchmark's agent port and /metrics reader
from netns import VethPair, require_namespaces  # noqa: E402 - the tests' namespace helper
from run import pktagent_command  # noqa: E402 - the offline benchmark's way to find the agent

SEED = 17  # the held-out mix: W1 uses seed 1
PACKETS = 200_000  # sent over and over (--loop): tcpreplay preloads the file for every run
SETTLE = 1.5  # seconds after the send before CPU is read: longer than pktagent's maximum batch latency (1 s)
TICK = os.sysconf("SC_CLK_TCK")


# -- /proc ----------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of the process tree, read two ways from /proc (``spent`` takes the difference).

    ``/proc/P/task/T/schedstat`` has each thread's time on a CPU in nanoseconds, but a thread
    that has exited is gone from it; ``/proc/P/stat``'s user + system time (reaped children
    included) keeps it, in 10 ms ticks. A capturer at 5k packets/s may use only a few ticks.
    """
    ticks, nanos = 0, 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    nanos += int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return ticks / TICK, nanos / 1e9


def spent(before: tuple[float, float], after: tuple[float, float]) -> float:
    return max(after[0] - before[0], after[1] - before[1])


def peak_rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total / 1024


# -- the capturers --------------------------------------------------------------------------


class Capturer:
    """One capturer process in the receiver namespace: start, counts, stop."""

    name = ""

    def __init__(self, pair: VethPair, work: Path) -> None:
        self.pair, self.work = pair, work
        self.proc: subprocess.Popen[str] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(self.pair.in_receiver(*self.command()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready()

    def ready(self) -> None:
        time.sleep(1.0)

    def counts(self) -> tuple[float, float]:
        """(received, dropped as the capturer counts them), read while running or from its exit output."""
        raise NotImplementedError

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""


class Pktagent(Capturer):
    name = "pktagent"

    def __init__(self, pair: VethPair, work: Path, agent: list[str], extra: list[str]) -> None:
        super().__init__(pair, work)
        self.agent, self.extra = agent, extra

    def command(self) -> list[str]:
        state = self.work / "state"
        state.mkdir(exist_ok=True)
        return [*self.agent, "run", "-i", self.pair.rx, "--listen", f"127.0.0.1:{PORT}", "--state-dir", str(state), *self.extra]

    def ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if metrics(self.pair).get(f'pktagent_capture_up{{interface="{self.pair.rx}"}}') == 1:
                    time.sleep(1.0)  # start-up work (the suffix list loads in a thread) is not the capture's cost
                    return
            except subprocess.CalledProcessError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"pktagent did not start: {self.stop()}")

    def counts(self) -> tuple[float, float]:
        m = metrics(self.pair)
        iface = f'interface="{self.pair.rx}"'
        dropped = sum(m.get(f'pktagent_packets_dropped_total{{{iface},stage="{s}"}}', 0.0) for s in ("kernel", "interface"))
        queue = m.get(f'pktagent_packets_dropped_total{{{iface},stage="queue"}}', 0.0)
        # received by the kernel = captured + kernel drops; queue drops are among the captured
        return m.get(f"pktagent_packets_captured_total{{{iface}}}", 0.0) + dropped, dropped + queue


class Softflowd(Capturer):
    name = "softflowd"

    def command(self) -> list[str]:
        return ["softflowd", "-i", self.pair.rx, "-6", "-d", "-n", "127.0.0.1:9", "-c", str(self.work / "sfd.ctl"), "-p", str(self.work / "sfd.pid")]

    def counts(self) -> tuple[float, float]:
        out = subprocess.run(self.pair.in_receiver("softflowctl", "-c", str(self.work / "sfd.ctl"), "statistics"), capture_output=True, text=True).stdout
        received = re.search(r"[Pp]ackets? received by libpcap:\s*(\d+)", out)
        dropped = re.search(r"[Pp]ackets? dropped by libpcap:\s*(\d+)", out)
        if received is None or dropped is None:
            raise SystemExit(f"cannot read softflowctl statistics: {out!r}")
        return float(received.group(1)), float(dropped.group(1))


class Tcpdump(Capturer):
    name = "tcpdump"
    _out = ""

    def command(self) -> list[str]:
        return ["tcpdump", "-i", self.pair.rx, "-w", "/dev/null", "-Z", "root"]

    def counts(self) -> tuple[float, float]:
        self._out = self.stop()  # tcpdump says its figures as it exits
        received = re.search(r"(\d+) packets received by filter", self._out)
        dropped = re.search(r"(\d+) packets dropped by kernel", self._out)
        if received is None or dropped is None:
            raise SystemExit(f"cannot read tcpdump's figures: {self._out!r}")
        return float(received.group(1)), float(dropped.group(1))

    def stop(self) -> str:
        if self.proc is not None and self.proc.returncode is None:
            self._out = super().stop()
        return self._out


# -- a run ----------------------------------------------------------------------------------


def send(pair: VethPair, pcap: Path, rate: int, packets: int) -> tuple[int, float]:
    out = subprocess.run(
        pair.in_sender("tcpreplay", "-i", pair.tx, "--preload-pcap", f"--pps={rate}", "--loop=0", f"--limit={packets}", str(pcap)),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"tcpreplay failed: {out.stdout.strip()} {out.stderr.strip()}")
    sent = int(re.search(r"Successful packets:\s+(\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    seconds = float(re.search(r"sent in ([\d.]+) seconds", out.stdout).group(1))  # type: ignore[union-attr]
    return sent, seconds


def measure(cap: Capturer, pcap: Path, rate: int, seconds: float) -> dict[str, object]:
    cap.start()
    assert cap.proc is not None
    pid = cap.proc.pid
    try:
        cpu0 = cpu_seconds(pid)
        sent, took = send(cap.pair, pcap, rate, int(rate * seconds))
        time.sleep(SETTLE)
        cpu = spent(cpu0, cpu_seconds(pid))
        rss = peak_rss_mib(pid)
        received, counted = cap.counts()
    finally:
        cap.stop()
    return {
        "capturer": cap.name,
        "rate": rate,
        "sent": sent,
        "send_seconds": took,
        "cpu_seconds": cpu,
        "cpu_s_per_million": cpu / sent * 1e6,
        "core_share": cpu / (took + SETTLE),
        "peak_rss_mib": rss,
        "lost_counted": counted,
        "lost_uncounted": sent - received,
    }


def idle(cap: Pktagent, seconds: float) -> dict[str, object]:
    cap.start()
    assert cap.proc is not None
    try:
        cpu0 = cpu_seconds(cap.proc.pid)
        time.sleep(seconds)
        cpu = spent(cpu0, cpu_seconds(cap.proc.pid))
        pid = cap.proc.pid
        return {"seconds": seconds, "cpu_seconds": cpu, "core_share": cpu / seconds, "rss_mib": rss_mib(pid), "peak_rss_mib": peak_rss_mib(pid)}
    finally:
        cap.stop()


def drop_page_cache() -> None:
    """Write back and drop the page cache, so that every capturer maps its libraries from disk (root only)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def held_out(path: Path, packets: int) -> Path:
    if not path.exists():
        from workloads import header_lengths, home_mix, write_pcap

        p, _ = home_mix(packets, seed=SEED)
        header_lengths(p)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pcap(path, p)
    return path


def summarise(rows: list[dict[str, object]], rates: list[int]) -> list[dict[str, object]]:
    table = []
    for rate in rates:
        row: dict[str, object] = {"rate": rate}
        for name in ("pktagent", "softflowd", "tcpdump"):
            runs = [r for r in rows if r["rate"] == rate and r["capturer"] == name]
            if not runs:
                continue
            row[name] = {
                "cpu_s_per_million": statistics.median(float(r["cpu_s_per_million"]) for r in runs),  # type: ignore[arg-type]
                "peak_rss_mib": max(float(r["peak_rss_mib"]) for r in runs),  # type: ignore[arg-type]
                "lost_counted": max(float(r["lost_counted"]) for r in runs),  # type: ignore[arg-type]
                "lost_uncounted": max(float(r["lost_uncounted"]) for r in runs),  # type: ignore[arg-type]
            }
        if "pktagent" in row and "softflowd" in row:
            a, s = row["pktagent"], row["softflowd"]
            assert isinstance(a, dict) and isinstance(s, dict)
            row["ratio"] = a["cpu_s_per_million"] / s["cpu_s_per_million"] if s["cpu_s_per_million"] else float("inf")
            # The repeats are interleaved, so pktagent's k-th run and softflowd's k-th ran side by side: their
            # ratios show how far the median ratio moves with the machine.
            mine, peer = ([float(r["cpu_s_per_million"]) for r in rows if r["rate"] == rate and r["capturer"] == n] for n in ("pktagent", "softflowd"))  # type: ignore[arg-type]
            row["pair_ratios"] = [x / y for x, y in zip(mine, peer) if y]
        table.append(row)
    return table


def _cell(row: dict[str, object], name: str, key: str, fmt: str) -> str:
    c = row.get(name)
    return format(c[key], fmt) if isinstance(c, dict) else "-"


def show(table: list[dict[str, object]], idle_row: dict[str, object] | None) -> None:
    names = ("pktagent", "softflowd", "tcpdump")
    print("    rate | cpu-s/M: pktagent softflowd tcpdump | ratio (pairs)      | peak RSS MiB: pktagent softflowd tcpdump | lost counted/uncounted")
    for row in table:
        cpu = " ".join(_cell(row, n, "cpu_s_per_million", ">8.2f") for n in names)
        rss = " ".join(_cell(row, n, "peak_rss_mib", ">8.1f") for n in names)
        lost = " ".join(f"{_cell(row, n, 'lost_counted', '.0f')}/{_cell(row, n, 'lost_uncounted', '.0f')}" for n in names)
        pairs = row.get("pair_ratios") or []
        spread = f"({min(pairs):.2f}-{max(pairs):.2f})" if isinstance(pairs, list) and pairs else ""
        print(f"{row['rate']:>8} | {cpu} | {float(row.get('ratio', float('nan'))):5.2f} {spread:<11} | {rss} | {lost}", flush=True)  # type: ignore[arg-type]
    if idle_row:
        share, rss_now, peak = (float(idle_row[k]) for k in ("core_share", "rss_mib", "peak_rss_mib"))  # type: ignore[arg-type]
        print(f"idle {idle_row['seconds']:.0f} s: pktagent {share:.3%} of a core, RSS {rss_now:.1f} MiB (peak {peak:.1f})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", type=int, nargs="+", default=[5000, 20000, 100000, 400000])
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds of traffic at each rate")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each capturer at each rate, interleaved")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of pktagent on an idle link (0: skip)")
    ap.add_argument("--only", nargs="+", choices=["pktagent", "softflowd", "tcpdump"], default=["pktagent", "softflowd", "tcpdump"])
    ap.add_argument("--config", type=Path, help="agent config to run with (default: none, the defaults)")
    ap.add_argument("--agent", help="command that runs the agent (default: the venv's pktagent), e.g. 'env -C ../other /abs/path/.venv/bin/python -m agent'")
    ap.add_argument("--keep-page-cache", action="store_true", help="do not empty the page cache first (see above)")
    ap.add_argument("--pcap", type=Path, default=HERE / "data" / f"home-held-out-{SEED}-{PACKETS}.pcap")
    args = ap.parse_args(argv)
    require_namespaces("the cost benchmark")
    if not args.keep_page_cache:
        drop_page_cache()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # still delete the namespaces
    for tool in ("softflowd", "softflowctl", "tcpdump"):
        if subprocess.run(["which", tool], capture_output=True).returncode != 0:
            raise SystemExit(f"{tool} is not installed (make system-deps)")
    pcap = held_out(args.pcap, PACKETS)
    agent = args.agent.split() if args.agent else pktagent_command()
    extra = ["--config", str(args.config)] if args.config else []
    pair = VethPair.create(f"cost{os.getpid()}")
    rows: list[dict[str, object]] = []
    idle_row = None
    with tempfile.TemporaryDirectory(prefix=f"pktagent-cost-{os.getpid()}-") as tmp:
        work = Path(tmp)
        makers = {
            "pktagent": lambda: Pktagent(pair, work, agent, extra),
            "softflowd": lambda: Softflowd(pair, work),
            "tcpdump": lambda: Tcpdump(pair, work),
        }
        try:
            for rate in args.rates:
                for _ in range(args.repeat):
                    for name in args.only:
                        row = measure(makers[name](), pcap, rate, args.seconds)
                        rows.append(row)
                        cpu, per_m, rss = (float(row[k]) for k in ("cpu_seconds", "cpu_s_per_million", "peak_rss_mib"))  # type: ignore[arg-type]
                        print(
                            f"  {name:9} {rate:>7}/s sent {row['sent']:>8} cpu {cpu:6.2f} s = {per_m:6.2f} cpu-s/M "
                            f"peak RSS {rss:6.1f} MiB lost {row['lost_counted']:.0f}/{row['lost_uncounted']:.0f}",
                            flush=True,
                        )
            if args.idle > 0 and "pktagent" in args.only:
                p = makers["pktagent"]()
                assert isinstance(p, Pktagent)
                idle_row = idle(p, args.idle)
        finally:
            pair.delete()
    table = summarise(rows, args.rates)
    show(table, idle_row)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "cost.json").write_text(json.dumps({"runs": rows, "table": table, "idle": idle_row}, indent=2) + "\n")
    print(f"written: {out / 'cost.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
