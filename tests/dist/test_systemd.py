"""The bundle's service under a real systemd: a Debian bookworm root booted with `systemd-nspawn --boot`, systemd as its PID 1.

The container has a network namespace of its own, into which the receiver end of a veth pair
(tests/netns.py) is moved, so the service captures on the veth the test gives it and tcpreplay
sends from the sender namespace; nothing reaches any other network. Inside, `sh install.sh` installs the x86_64 bundle (built here with
`make bundle`) and enables and starts the unit; then the unit is checked running as its user
with CAP_NET_RAW alone, counting a known capture exactly, restarted by systemd after a crash,
reloaded, stopped cleanly, and removed by `install.sh --uninstall`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, need_root, need_tool
from known import mixed
from netns import VethPair
from prometheus_client.parser import text_string_to_metric_families
from roots import RootSpec, debian_root, overlay
from waiting import until

import agent

pytestmark = pytest.mark.dist

SPEC = RootSpec("amd64", ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "iproute2"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CONFIG = """capture:
  interfaces: [pkt-rx]
web:
  listen: "127.0.0.1:10464"
state_dir: /var/lib/pktagent
"""
FETCH = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen("http://127.0.0.1:10464" + sys.argv[1], timeout=5) as r:
        print(r.status); print(r.read().decode(), end="")
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode(), end="")
except OSError as e:
    print(0); print(e, end="")
"""


@dataclass
class Booted:
    root: Path
    nspawn: subprocess.Popen[str]
    leader: int
    veth: VethPair
    tree: str

    def run(self, *cmd: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """``cmd`` inside the container (its mount, PID, IPC, UTS and network namespaces)."""
        enter = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--", "env", "-i", f"PATH={PATH}", "LANG=C.UTF-8"]
        return subprocess.run([*enter, *cmd], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", "pktagent.service", *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    def fetch(self, path: str) -> tuple[int, str]:
        """GET from the service, from the container's own network namespace (the veth's receiver side)."""
        done = self.run("/opt/pktagent/venv/bin/python", "-c", FETCH, path, timeout=60)
        status, _, body = done.stdout.partition("\n")
        return int(status or 0), body


def build_bundle(out: Path) -> Path:
    done = subprocess.run(
        ["make", "--no-print-directory", "bundle", "PLATFORM=linux_x86_64", f"DIST={out}"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (bundle,) = out.glob("pktagent-*-linux_x86_64.tar.gz")
    return bundle


def boot(root: Path, veth: VethPair, log: Path) -> tuple[subprocess.Popen[str], int]:
    machine = f"pktagent-dist-{os.getpid()}"
    cmd = [
        "systemd-nspawn", "--boot", "--quiet", f"--directory={root}", f"--machine={machine}", "--register=no", "--keep-unit",
        "--private-network", "--console=pipe",
    ]  # fmt: skip
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        nspawn = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)

    def leader() -> int:
        children = subprocess.run(["pgrep", "-P", str(nspawn.pid)], capture_output=True, text=True).stdout.split()
        assert nspawn.poll() is None, log.read_text()
        return int(children[0]) if children else 0

    pid = until(leader, "systemd-nspawn's container", timeout=60)
    # The receiver's end of the veth moves into the container's own network namespace. (Booting in the
    # receiver namespace itself, --network-namespace-path, leaves the host's /sys/class/net in the container.)
    subprocess.run(["ip", "-n", veth.receiver, "link", "set", veth.rx, "down"], check=True)
    subprocess.run(["ip", "-n", veth.receiver, "link", "set", veth.rx, "netns", str(pid)], check=True)
    in_netns = ["nsenter", "-t", str(pid), "-n"]
    subprocess.run([*in_netns, "sysctl", "-qw", f"net.ipv6.conf.{veth.rx}.disable_ipv6=1"], check=True)  # no chatter of its own on the wire
    subprocess.run([*in_netns, "ip", "link", "set", veth.rx, "up"], check=True)
    return nspawn, pid


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    need_root()
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "make", "tcpreplay"):
        need_tool(tool)
    work = tmp_path_factory.mktemp("systemd")
    bundle = build_bundle(work / "dist")
    base = debian_root(SPEC, work / "debootstrap.log")
    veth = VethPair.create(f"d{os.getpid() % 100000}")
    try:
        with overlay(base, "systemd", chroot=False) as root:
            dest = root / "root" / "bundle"
            dest.mkdir(parents=True)
            with tarfile.open(bundle) as tar:
                tar.extractall(dest, filter="data")
            (tree,) = dest.iterdir()
            (root / "etc" / "pktagent").mkdir()
            (root / "etc" / "pktagent" / "config.yml").write_text(CONFIG)  # install.sh keeps a config it finds
            nspawn, leader = boot(root, veth, work / "nspawn.log")
            machine = Booted(root, nspawn, leader, veth, f"/root/bundle/{tree.name}")
            try:
                state = until(lambda: machine.run("systemctl", "is-system-running").stdout.strip() in ("running", "degraded") and "up", "boot", timeout=120)
                assert state
                yield machine
            finally:
                nspawn.send_signal(signal.SIGTERM)  # systemd-nspawn halts the container
                try:
                    nspawn.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    nspawn.kill()
                    nspawn.wait(timeout=30)
    finally:
        veth.delete()


def test_systemd_is_pid_1_in_the_container(booted: Booted) -> None:
    assert booted.run("cat", "/proc/1/comm").stdout == "systemd\n"
    assert booted.run("systemctl", "is-system-running").stdout.strip() == "running", booted.run("systemctl", "--failed").stdout


def test_install_sh_enables_and_starts_the_unit(booted: Booted) -> None:
    done = booted.run("sh", f"{booted.tree}/install.sh")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "install.sh: kept /etc/pktagent/config.yml"
    assert done.stdout.splitlines()[-1] == "install.sh: pktagent.service is enabled and running"
    assert booted.run("systemctl", "is-enabled", "pktagent.service").stdout == "enabled\n"
    verify = booted.run("systemd-analyze", "verify", "/etc/systemd/system/pktagent.service")
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")


def main_pid(booted: Booted) -> int:
    return int(booted.show("MainPID")["MainPID"])


def open_files(booted: Booted, pid: int) -> tuple[int, int]:
    """The soft and hard limit of open files of a process in the container."""
    limits = booted.run("cat", f"/proc/{pid}/limits").stdout
    found = re.search(r"^Max open files\s+(\d+)\s+(\d+)\s+files", limits, re.M)
    assert found, limits
    return int(found[1]), int(found[2])


def test_the_service_runs_as_its_user_with_cap_net_raw_alone(booted: Booted) -> None:
    _, body = until(lambda: (s := booted.fetch("/health"))[0] == 200 and s, "/health 200", timeout=60)
    assert '"pkt-rx"' in body
    pid = main_pid(booted)
    status_text = booted.run("cat", f"/proc/{pid}/status").stdout
    fields = dict(line.split(":\t", 1) for line in status_text.splitlines() if ":\t" in line)
    assert {k: int(fields[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == dict.fromkeys(
        ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 1 << 13
    )
    assert fields["NoNewPrivs"].strip() == "1"
    uid = fields["Uid"].split()[0]
    assert booted.run("getent", "passwd", uid).stdout.split(":")[0] == "pktagent"
    # LimitNOFILE=65536, as far as the container's systemd may go (its hard limit comes from this machine: 20000 here);
    # without it the soft limit would be systemd's default, 1024.
    ceiling = open_files(booted, 1)[1]
    assert ceiling > 1024
    assert open_files(booted, pid) == (min(65536, ceiling), min(65536, ceiling))


def test_the_service_counts_a_known_capture_exactly(booted: Booted, tmp_path: Path) -> None:
    k = mixed()
    pcap = k.capture.write(tmp_path / "mixed.pcap")
    sent = subprocess.run(booted.veth.in_sender(need_tool("tcpreplay"), "-q", "-i", booted.veth.tx, str(pcap)), capture_output=True, text=True)
    assert sent.returncode == 0, sent.stderr

    def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = booted.fetch("/metrics")
        assert status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}

    iface = (("interface", "pkt-rx"),)
    got = until(lambda: (m := metrics()).get(("pktagent_packets_processed_total", iface)) == k.frames and m, "all frames processed", timeout=30)
    assert got[("pktagent_packets_captured_total", iface)] == k.frames == 32
    traffic = {
        (labels["network"], labels["transport"], labels["direction"]): value
        for (name, key), value in got.items()
        if name == "pktagent_traffic_packets_total"
        for labels in [dict(key)]
    }
    assert traffic == k.packets_by_cell()
    assert got[("pktagent_build_info", (("libpcap_version", "1.9.1"), ("python_version", "3.11.2"), ("version", agent.__version__)))] == 1


def test_systemd_restarts_it_after_a_crash(booted: Booted) -> None:
    before = main_pid(booted)
    assert booted.run("systemctl", "kill", "--signal=SIGKILL", "pktagent.service").returncode == 0
    # Restart=on-failure after RestartSec=5s: a new main process, and /health answers again.
    until(lambda: main_pid(booted) not in (0, before) and booted.show("ActiveState")["ActiveState"] == "active", "the restart", timeout=60)
    assert booted.show("NRestarts")["NRestarts"] == "1"
    until(lambda: booted.fetch("/health")[0] == 200, "/health after the restart", timeout=60)


def test_reload_sends_sighup_and_keeps_the_process(booted: Booted) -> None:
    pid = main_pid(booted)
    assert booted.run("systemctl", "reload", "pktagent.service").returncode == 0
    journal = lambda: booted.run("journalctl", "--unit=pktagent.service", "--no-pager", "--output=cat").stdout  # noqa: E731
    until(lambda: "reloaded the config" in journal(), "the reload in the journal")
    assert main_pid(booted) == pid
    assert booted.fetch("/health")[0] == 200


def test_stop_is_clean(booted: Booted) -> None:
    done = booted.run("systemctl", "stop", "pktagent.service")
    assert done.returncode == 0, done.stderr
    # Exited by itself with status 0 on SIGTERM: a hung stop would end in Result=timeout and SIGKILL.
    state = booted.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0", "ExecMainCode": "1"}


def test_uninstall_removes_the_unit_and_keeps_the_config(booted: Booted) -> None:
    done = booted.run("sh", "/opt/pktagent/install.sh", "--uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (booted.root / "etc/systemd/system/pktagent.service").exists()
    assert not (booted.root / "opt/pktagent").exists()
    assert (booted.root / "etc/pktagent/config.yml").read_text() == CONFIG
    assert booted.run("systemctl", "is-enabled", "pktagent.service").returncode != 0
    assert booted.show("LoadState")["LoadState"] == "not-found"
