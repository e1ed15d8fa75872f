"""The aarch64 bundle on arm64 Debian: built here with `make bundle`, installed with `install.sh --no-systemd` in a
bookworm arm64 root run under qemu-user-static, with no network, then replaying captures with known answers exactly.

The root comes from roots.py (debootstrap, cached a week); every step runs chrooted in a network
namespace of its own, so the install can only use what the bundle carries. The tests run in
order on one overlay of the root: install, replay, version, upgrade in place, uninstall.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, need, need_root, need_tool
from known import Known, mixed
from prometheus_client.parser import text_string_to_metric_families
from roots import RootSpec, debian_root, in_root, overlay

import agent

pytestmark = pytest.mark.dist

SPEC = RootSpec("arm64", ("python3", "python3-venv"))
BUNDLE_DIR = "/root/bundle"  # inside the root


@dataclass
class Arm64:
    root: Path
    bundle: Path  # the tarball, on this machine
    tree: str  # the unpacked bundle inside the root
    env: dict[str, str]  # its bundle.env
    install: subprocess.CompletedProcess[str]
    work: Path


def make_bundle(out: Path, **env: str) -> Path:
    """`make bundle PLATFORM=linux_aarch64` as a user runs it, into ``out``."""
    done = subprocess.run(
        ["make", "--no-print-directory", "bundle", "PLATFORM=linux_aarch64", f"DIST={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (bundle,) = out.glob("pktagent-*-linux_aarch64.tar.gz")
    assert bundle.name == f"pktagent-{agent.__version__}-linux_aarch64.tar.gz"
    return bundle


def unpack(bundle: Path, root: Path) -> tuple[str, dict[str, str]]:
    dest = root / BUNDLE_DIR.lstrip("/")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    (tree,) = dest.iterdir()
    env = dict(line.split("=", 1) for line in (tree / "bundle.env").read_text().splitlines())
    return f"{BUNDLE_DIR}/{tree.name}", {k: v.strip("'") for k, v in env.items()}


@pytest.fixture(scope="module")
def arm64(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arm64]:
    need_root()
    for tool in ("debootstrap", "qemu-aarch64-static", "unshare", "chroot", "make"):
        need_tool(tool)
    need(Path("/usr/lib/binfmt.d/qemu-aarch64.conf").exists(), "qemu-user-static's binfmt rule for aarch64")
    work = tmp_path_factory.mktemp("arm64")
    bundle = make_bundle(work / "dist")
    base = debian_root(SPEC, work / "debootstrap.log")
    with overlay(base, "arm64") as root:
        tree, env = unpack(bundle, root)
        install = in_root(root, "sh", f"{tree}/install.sh", "--no-systemd")
        yield Arm64(root, bundle, tree, env, install, work)


def test_install_sh_installs_offline(arm64: Arm64) -> None:
    done = arm64.install
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "install.sh: wrote the default /etc/pktagent/config.yml",
        f"install.sh: installed pktagent {agent.__version__} (revision {arm64.env['BUNDLE_REVISION']}) in /opt/pktagent/venv",
    ]
    root = arm64.root
    assert (root / "opt/pktagent/venv/bin/pktagent").is_file()
    python = os.readlink(root / "opt/pktagent/venv/bin/python3")
    assert python == "/usr/bin/python3"  # the system's Python
    passwd = in_root(root, "getent", "passwd", "pktagent").stdout.split(":")
    assert (passwd[5], passwd[6].strip()) == ("/var/lib/pktagent", "/usr/sbin/nologin")
    assert int(passwd[2]) < 1000
    config = root / "etc/pktagent/config.yml"
    assert config.read_bytes() == (ROOT / "bundle" / "config.yml").read_bytes()
    assert oct(config.stat().st_mode & 0o777) == "0o640"
    owners = in_root(root, "stat", "-c", "%U:%G %a", "/etc/pktagent", "/etc/pktagent/config.yml", "/var/lib/pktagent").stdout.splitlines()
    assert owners == ["root:pktagent 750", "root:pktagent 640", "pktagent:pktagent 750"]
    assert not (root / "etc/systemd/system/pktagent.service").exists()  # --no-systemd
    check = in_root(root, "/opt/pktagent/venv/bin/pktagent", "check-config", "/etc/pktagent/config.yml")
    assert (check.returncode, check.stdout) == (0, "/etc/pktagent/config.yml: valid\n"), check.stderr
    # Exactly the locked wheels, at the locked versions: nothing came from anywhere else.
    lock = (root / arm64.tree.lstrip("/") / "requirements.lock").read_text().splitlines()
    locked = sorted(line.split(" ")[0] for line in lock if "==" in line)
    freeze = in_root(root, "/opt/pktagent/venv/bin/python", "-m", "pip", "--disable-pip-version-check", "freeze", "--all")
    installed = sorted(line.lower().replace("_", "-") for line in freeze.stdout.splitlines() if not line.startswith(("pip==", "setuptools==")))
    assert installed == locked


def replay_samples(arm64: Arm64, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    done = in_root(arm64.root, "/opt/pktagent/venv/bin/pktagent", "replay", f"/root/{name}")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(done.stdout) for s in f.samples}


def cells(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str) -> dict[tuple[str, str, str], float]:
    return {
        (labels["network"], labels["transport"], labels["direction"]): value
        for (name, key), value in samples.items()
        if name == metric
        for labels in [dict(key)]
    }


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_replay_on_arm64_is_exact(arm64: Arm64, pcapng: bool) -> None:
    """The pcap goes through the forked memory-map walker, the pcapng through libpcap: both on aarch64 numpy and pcapy-ng."""
    k: Known = mixed()
    name = "mixed.pcapng" if pcapng else "mixed.pcap"
    k.capture.write(arm64.root / "root" / name, pcapng=pcapng)
    got = replay_samples(arm64, name)
    iface = (("interface", name),)
    assert got[("pktagent_packets_captured_total", iface)] == k.frames == 32
    assert got[("pktagent_packets_processed_total", iface)] == k.frames
    assert got[("pktagent_packets_duplicate_total", iface)] == 0
    assert cells(got, "pktagent_traffic_packets_total") == k.packets_by_cell()
    assert cells(got, "pktagent_traffic_bytes_total") == k.bytes_by_cell()
    started = {dict(key)["transport"]: value for (metric, key), value in got.items() if metric == "pktagent_flows_started_total"}
    assert started == k.flows_started
    assert sum(v for (metric, _), v in got.items() if metric == "pktagent_decode_errors_total") == 0


def test_version_names_the_bundle_build(arm64: Arm64) -> None:
    done = in_root(arm64.root, "/opt/pktagent/venv/bin/pktagent", "--version")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"pktagent, version {agent.__version__} (revision: {arm64.env['BUNDLE_REVISION']})"
    assert lines[1] == f"  build date:       {arm64.env['BUNDLE_BUILD_DATE']}"
    assert lines[2].startswith("  python version:   3.11.") and lines[2].endswith(" (CPython)")
    assert lines[3] == "  libpcap version:  1.9.1"  # the one pcapy-ng's aarch64 wheel vendors
    assert lines[4] == "  platform:         linux/aarch64"


def test_rerun_with_a_newer_bundle_upgrades_in_place(arm64: Arm64) -> None:
    """Another build (another build date baked in: other bytes, same version) over the first: pktagent is replaced,
    the edited config kept, the venv reused."""
    config = arm64.root / "etc/pktagent/config.yml"
    edited = config.read_text().replace('bpf_filter: ""', 'bpf_filter: "not port 22"')
    config.write_text(edited)
    newer = make_bundle(arm64.work / "dist-newer", SOURCE_DATE_EPOCH="1767225600")  # 2026-01-01
    tree, env = unpack(newer, arm64.root)
    assert env["BUNDLE_BUILD_DATE"] == "20260101-00:00:00"
    venv = (arm64.root / "opt/pktagent/venv/pyvenv.cfg").stat().st_ino
    done = in_root(arm64.root, "sh", f"{tree}/install.sh", "--no-systemd")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == "install.sh: kept /etc/pktagent/config.yml"
    assert config.read_text() == edited
    assert (arm64.root / "opt/pktagent/venv/pyvenv.cfg").stat().st_ino == venv
    version = in_root(arm64.root, "/opt/pktagent/venv/bin/pktagent", "--version").stdout.splitlines()
    assert version[1] == "  build date:       20260101-00:00:00"


def test_uninstall_keeps_config_and_state_unless_purged(arm64: Arm64) -> None:
    root = arm64.root
    (root / "var/lib/pktagent/devices.db").write_bytes(b"state")
    done = in_root(root, "sh", "/opt/pktagent/install.sh", "--uninstall")  # the copy install.sh leaves: the bundle may be gone
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "install.sh: removed pktagent; kept /etc/pktagent, /var/lib/pktagent and the pktagent user (--purge removes them)\n"
    assert not (root / "opt/pktagent").exists()
    assert (root / "etc/pktagent/config.yml").exists() and (root / "var/lib/pktagent/devices.db").read_bytes() == b"state"
    assert in_root(root, "getent", "passwd", "pktagent").returncode == 0

    done = in_root(root, "sh", f"{arm64.tree}/install.sh", "--uninstall", "--purge")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "install.sh: removed pktagent, /etc/pktagent, /var/lib/pktagent and the pktagent user\n"
    assert not (root / "etc/pktagent").exists() and not (root / "var/lib/pktagent").exists()
    assert in_root(root, "getent", "passwd", "pktagent").returncode == 2
    assert in_root(root, "getent", "group", "pktagent").returncode == 2
