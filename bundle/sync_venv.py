"""Make a virtual environment hold exactly what a bundle's lock names, offline: run with the venv's Python.

    /opt/pktagent/venv/bin/python sync_venv.py BUNDLE_DIR LOCK MARKER

install.sh and the Ansible role both call it. pip installs the lock's wheels from BUNDLE_DIR/wheels,
each checked against its sha256 (--require-hashes, --no-index: nothing else is reachable);
pktagent itself is always put back (pip keeps an installed release of the same version, and a
rebuilt bundle's wheel differs); whatever an older lock had and this one lacks is removed; the
lock is copied to MARKER, so the next run can tell the venv already matches it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

KEEP = {"pip", "setuptools", "wheel"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip(*args: str) -> None:
    # The host's pip configuration (index URLs, find-links, constraints) has no say: the bundle is the only source.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "--no-cache-dir", *args]
    subprocess.run(cmd, env=env, check=True)


def main(bundle: Path, lock: Path, marker: Path) -> int:
    wheels = ["--no-index", "--find-links", str(bundle / "wheels"), "--only-binary", ":all:", "--require-hashes"]
    pip("install", "--quiet", *wheels, "-r", str(lock))
    own = marker.with_name("pktagent.lock")
    own.write_text("".join(line for line in lock.read_text().splitlines(keepends=True) if line.startswith("pktagent==")))
    pip("install", "--quiet", *wheels, "--no-deps", "--force-reinstall", "-r", str(own))
    own.unlink()
    wanted = {norm(line.split("==")[0]) for line in lock.read_text().splitlines() if "==" in line and not line.startswith("#")}
    extra = sorted({norm(d.metadata["Name"]) for d in metadata.distributions()} - wanted - KEEP)
    if extra:
        pip("uninstall", "--quiet", "--yes", *extra)
    shutil.copyfile(lock, marker)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} BUNDLE_DIR LOCK MARKER")
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
