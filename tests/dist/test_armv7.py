"""32-bit Raspberry Pi OS has no bundle (numpy and pcapy-ng publish no armv7 wheels): what can be shown on a real 32-bit ARM Python.

A Debian bookworm armhf root under qemu-user-static: install.sh of an aarch64 bundle refuses it
in one line before changing anything, and pktagent's platform detection names it armv7l. A build
from source there (pcapy-ng against libpcap-dev, numpy from piwheels) needs piwheels, which this
machine cannot reach; the README says what works.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import ROOT, need, need_root, need_tool
from roots import RootSpec, debian_root, in_root, overlay

import agent

pytestmark = pytest.mark.dist

SPEC = RootSpec("armhf", ("python3", "python3-venv"))


def test_install_sh_refuses_32_bit_arm_and_pktagent_names_it(tmp_path: Path) -> None:
    need_root()
    for tool in ("debootstrap", "qemu-arm-static", "unshare", "chroot"):
        need_tool(tool)
    need(Path("/usr/lib/binfmt.d/qemu-arm.conf").exists(), "qemu-user-static's binfmt rule for arm")
    base = debian_root(SPEC, tmp_path / "debootstrap.log")
    with overlay(base, "armv7") as root:
        # install.sh refuses before it needs any wheel: the script and an aarch64 bundle's bundle.env are enough.
        tree = root / "root" / "bundle"
        tree.mkdir(parents=True)
        shutil.copy2(ROOT / "bundle" / "install.sh", tree / "install.sh")
        fields = {"VERSION": agent.__version__, "REVISION": "x", "PLATFORM": "linux_aarch64", "MACHINE": "aarch64", "PYTHON": "3.11"}
        (tree / "bundle.env").write_text("".join(f"BUNDLE_{k}='{v}'\n" for k, v in fields.items()))
        done = in_root(root, "sh", "/root/bundle/install.sh", "--no-systemd")
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == (
            "install.sh: this is 32-bit ARM (armv7l): numpy and pcapy-ng publish no wheels for it, so there is no bundle; "
            "see README, Install, 32-bit Raspberry Pi OS\n"
        )
        assert not (root / "opt" / "pktagent").exists()
        assert in_root(root, "getent", "passwd", "pktagent").returncode == 2  # no user made

        # What `pktagent --version` would say there (agent/version.py needs nothing but the standard library).
        (root / "root" / "agent").mkdir()
        for name in ("__init__.py", "version.py"):
            shutil.copy2(ROOT / "agent" / name, root / "root" / "agent" / name)
        probe = in_root(root, "sh", "-c", "cd /root && python3 -c 'from agent import version; print(version.machine(), version.info()[\"platform\"])'")
        assert (probe.returncode, probe.stdout) == (0, "armv7l linux/armv7l\n"), probe.stderr
