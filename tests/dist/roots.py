"""Debian bookworm roots for the bundle tests: built once with debootstrap, cached outside the repository, used through overlays.

A root is kept in ``PKTAGENT_ROOT_CACHE`` (default /var/cache/pktagent-test-roots) under a name
made of its parameters and the ISO week it was built in, so it is rebuilt with the week's
packages once a week and never shared between different parameters. Each test works on an
overlay of it, so the cached root stays as debootstrap left it. Foreign architectures run
through qemu-user-static, registered with binfmt_misc here if the host has not done so.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("PKTAGENT_ROOT_CACHE", "/var/cache/pktagent-test-roots"))
MIRROR = os.environ.get("PKTAGENT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU = {"arm64": "aarch64", "armhf": "arm"}  # dpkg architecture -> qemu's name


@dataclass(frozen=True)
class RootSpec:
    arch: str
    include: tuple[str, ...]

    @property
    def key(self) -> str:
        params = hashlib.sha256(f"{SUITE} {self.arch} minbase {' '.join(sorted(self.include))} {MIRROR}".encode()).hexdigest()[:10]
        week = time.strftime("%G-W%V", time.gmtime())
        return f"{SUITE}-{self.arch}-{params}-{week}"


def native_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def ensure_binfmt(arch: str) -> None:
    """qemu-user-static registered for this architecture (with F: the interpreter works inside a chroot)."""
    if arch == native_arch():
        return
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True, capture_output=True)
    name = QEMU[arch]
    if not (BINFMT / f"qemu-{name}").exists():
        rule = Path(f"/usr/lib/binfmt.d/qemu-{name}.conf").read_text()
        (BINFMT / "register").write_text("".join(line for line in rule.splitlines() if line and not line.startswith("#")))
    assert (BINFMT / f"qemu-{name}").read_text().startswith("enabled"), f"qemu-{name} is registered but disabled in binfmt_misc"


def debian_root(spec: RootSpec, log: Path) -> Path:
    """The cached root for ``spec``, built now if this week's is not there; older builds of it are removed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ensure_binfmt(spec.arch)
    root = CACHE / spec.key
    with open(CACHE / f".{spec.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        if not (root / ".complete").exists():
            partial = CACHE / f".{spec.key}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            with open(log, "w") as out:
                cmd = ["debootstrap", f"--arch={spec.arch}", "--variant=minbase", f"--include={','.join(spec.include)}", SUITE, str(partial), MIRROR]
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"debootstrap failed ({done.returncode}); see {log}:\n{log.read_text()[-3000:]}")
            (partial / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
            partial.rename(root)
        for old in CACHE.glob(f"{SUITE}-{spec.arch}-{spec.key.split('-')[2]}-*"):
            if old != root:
                shutil.rmtree(old, ignore_errors=True)
    return root


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@contextmanager
def overlay(root: Path, tag: str, *, chroot: bool = True) -> Iterator[Path]:
    """A writable copy of ``root`` (an overlay mount), removed afterwards; for chroot, with /proc and /dev (nspawn makes its own)."""
    base = Path(tempfile.mkdtemp(prefix=f"pktagent-{tag}-{os.getpid()}-"))
    merged = base / "root"
    for d in ("upper", "work", "root"):
        (base / d).mkdir()
    mounted: list[Path] = []
    try:
        mount("-t", "overlay", "overlay", "-o", f"lowerdir={root},upperdir={base / 'upper'},workdir={base / 'work'}", str(merged))
        mounted.append(merged)
        if chroot:
            mount("-t", "proc", "proc", str(merged / "proc"))
            mounted.append(merged / "proc")
            mount("--bind", "/dev", str(merged / "dev"))
            mounted.append(merged / "dev")
        yield merged
    finally:
        for path in reversed(mounted):
            subprocess.run(["umount", "--lazy", str(path)], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def in_root(root: Path, *cmd: str, network: bool = False, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` chrooted in ``root``, by default in a network namespace of its own (no network at all)."""
    prefix = ["chroot", str(root)] if network else ["unshare", "--net", "chroot", str(root)]
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
    return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
