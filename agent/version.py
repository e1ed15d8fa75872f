"""What ``pktagent --version`` prints: version, git revision, build date, Python, libpcap, platform."""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__

# Written into the wheel by `make bundle` (packaging/bundle.py); absent in a checkout.
BUILD_FILE = "_build.json"


def baked() -> dict[str, str]:
    """The revision and build date baked in when the wheel was built, if it was."""
    from importlib import resources  # here: a running agent reads it once, and the import costs 1 MiB

    try:
        data = json.loads(resources.files("agent").joinpath(BUILD_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def git_revision(checkout: Path) -> str:
    """The commit a checkout is at (``-dirty`` when it has changes), or ``unknown``."""
    if not (checkout / ".git").exists():
        return "unknown"
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def libpcap_version() -> str:
    """The libpcap pcapy-ng is linked with (its wheels vendor one), read without importing numpy or pcapy."""
    spec = importlib.util.find_spec("pcapy")
    if spec is None or spec.origin is None:
        return "unknown"
    try:
        lib_version = ctypes.CDLL(spec.origin).pcap_lib_version
        lib_version.restype = ctypes.c_char_p
        text = lib_version().decode()
    except (OSError, AttributeError):
        return "unknown"
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else "unknown"


def machine() -> str:
    """The userland's architecture: a 32-bit Python on a 64-bit ARM kernel (32-bit Raspberry Pi OS on a Pi 4) is armv7l."""
    name = platform.machine()
    if sys.maxsize <= 2**32 and name in ("aarch64", "armv8l"):
        return "armv7l"
    return name


def info() -> dict[str, str]:
    """Every field of the version text, as strings."""
    build = baked()
    checkout = Path(__file__).resolve().parent.parent
    return {
        "version": __version__,
        "revision": build.get("revision") or git_revision(checkout),
        "build_date": build.get("build_date", "unknown"),
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "libpcap": libpcap_version(),
        "platform": f"{platform.system().lower()}/{machine()}",
    }


def text() -> str:
    """node_exporter's layout: the version line, then one indented line per build detail."""
    i = info()
    return (
        f"pktagent, version {i['version']} (revision: {i['revision']})\n"
        f"  build date:       {i['build_date']}\n"
        f"  python version:   {i['python']}\n"
        f"  libpcap version:  {i['libpcap']}\n"
        f"  platform:         {i['platform']}\n"
    )


class VersionAction(argparse.Action):
    """``--version``: the text is worked out only when asked for (it runs git in a checkout)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version and build details and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        sys.stdout.write(text())
        parser.exit()


def build_labels() -> dict[str, str]:
    """The labels of ``pktagent_build_info``: this version, Python's and libpcap's."""
    return {"version": __version__, "python_version": platform.python_version(), "libpcap_version": libpcap_version()}
