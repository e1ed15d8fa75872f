"""Build an offline install bundle: pktagent's wheel, every dependency's binary wheel for one platform, hash locks, install.sh, the unit.

    python bundle/build.py --platform linux_aarch64 --python 3.11 --out dist

writes dist/pktagent-VERSION-PLATFORM.tar.gz (``-pyX.Y`` is added for a Python other than 3.11),
one top-level directory of the same name. The wheels come from pip's cross-platform download
(binary wheels only), so any machine builds a bundle for any of the platforms.
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "bundle"
ROLE = ROOT / "ansible" / "roles" / "pktagent"
DEFAULT_PYTHON = "3.11"  # Debian 12 and Raspberry Pi OS Bookworm
# The glibc of the oldest target (Debian 12): wheels needing a newer one would not load there.
GLIBC = (2, 36)
MACHINES = {"linux_aarch64": "aarch64", "linux_x86_64": "x86_64"}
NO_WHEELS = {
    "linux_armv7l": "numpy and pcapy-ng publish no 32-bit ARM wheels on PyPI",
    "linux_armv6l": "numpy and pcapy-ng publish no 32-bit ARM wheels on PyPI",
}
PYTHONS = ("3.11", "3.12", "3.13")
# The extras a bundle carries: the base install, and OTLP over gRPC (install.sh --grpc).
LOCKS = {"requirements.lock": (), "requirements-grpc.lock": ("grpc",)}


class BundleError(Exception):
    """A bundle that cannot be built as asked: the message says why and what to do."""


@dataclass
class Wheel:
    path: Path
    name: str
    version: str
    requires: list[Requirement] = field(default_factory=list)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def bundle_name(version: str, platform: str, python: str) -> str:
    return f"pktagent-{version}-{platform}" + ("" if python == DEFAULT_PYTHON else f"-py{python}")


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def revision() -> str:
    head = git("rev-parse", "HEAD")
    if not head:
        return "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def build_epoch() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    return int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())


def build_wheel(work: Path, build: dict[str, str]) -> Path:
    """pktagent's wheel, from a copy of the tree with the revision and build date baked in."""
    src = work / "src"
    shutil.copytree(ROOT / "agent", src / "agent", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_build.json"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    (src / "agent" / "_build.json").write_text(json.dumps(build, sort_keys=True) + "\n")
    out = work / "pktagent-wheel"
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(src))
    (wheel,) = out.glob("pktagent-*.whl")
    return wheel


def pip(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BundleError(f"pip {args[0]} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


def platform_tags(machine: str) -> list[str]:
    """Every manylinux tag a glibc-GLIBC system of this machine accepts (pip does not widen an explicit --platform)."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC[1], 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def download(wheel: Path, machine: str, python: str, dest: Path) -> None:
    """pktagent[grpc] and its dependencies as binary wheels for the target (pip's cross-platform download)."""
    platforms = [arg for tag in platform_tags(machine) for arg in ("--platform", tag)]
    abi = "cp" + python.replace(".", "")
    target = ["--implementation", "cp", "--python-version", python, "--abi", abi, *platforms]
    pip("download", "--quiet", "--only-binary=:all:", "--dest", str(dest), *target, f"{wheel}[grpc]")


def read_wheel(path: Path) -> Wheel:
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        meta = email.parser.Parser().parsestr(z.read(name).decode())
    return Wheel(path, canonicalize_name(meta["Name"]), meta["Version"], [Requirement(r) for r in meta.get_all("Requires-Dist") or []])


def environment(machine: str, python: str) -> dict[str, str]:
    """The marker environment of the target: pip's download evaluates markers on this machine's Python instead."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }


def closure(wheels: dict[str, Wheel], extras: tuple[str, ...], env: dict[str, str]) -> list[Wheel]:
    """pktagent with these extras and everything it needs on the target; a dependency pip left out is an error."""
    need: dict[str, set[str]] = {"pktagent": set(extras)}
    todo = ["pktagent"]
    while todo:
        wheel = wheels[todo.pop()]
        for req in wheel.requires:
            if req.marker and not any(Marker.evaluate(req.marker, {**env, "extra": e}) for e in need[wheel.name] | {""}):
                continue
            name = canonicalize_name(req.name)
            if name not in wheels:
                raise BundleError(f"{wheel.name} needs {req} on Python {env['python_version']}, and pip did not download it")
            if not req.specifier.contains(Version(wheels[name].version), prereleases=True):
                raise BundleError(f"{wheel.name} needs {req}, pip downloaded {name} {wheels[name].version}")
            if name not in need or not set(req.extras) <= need[name]:
                need.setdefault(name, set()).update(req.extras)
                todo.append(name)
    return sorted((wheels[n] for n in need), key=lambda w: w.name)


def lock_text(wheels: list[Wheel], title: str) -> str:
    lines = [f"# {title}", "# pip install --no-index --find-links wheels --require-hashes -r THIS (install.sh does)"]
    lines += [f"{w.name}=={w.version} --hash=sha256:{w.sha256}" for w in wheels]
    return "\n".join(lines) + "\n"


def render_unit() -> str:
    """The role's unit template with the role's defaults: one unit for the role and for install.sh."""
    import jinja2
    import yaml

    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: "\n".join(f"# {line}".rstrip() for line in ["", *text.splitlines(), ""])
    env.filters["bool"] = bool
    venv = f"{defaults['pktagent_install_dir']}/venv"
    return env.get_template("pktagent.service.j2").render(
        **defaults,
        ansible_managed="Installed by pktagent's install.sh from its bundle; an upgrade replaces it.\nLocal changes go in a drop-in: systemctl edit pktagent",
        _pktagent_binary=f"{venv}/bin/pktagent",
        _pktagent_config_file=f"{defaults['pktagent_config_dir']}/config.yml",
        _pktagent_web_config_enabled=False,
        _pktagent_web_config_file="",
    )


def write_tarball(tree: Path, out: Path, epoch: int) -> None:
    """A reproducible tar.gz: sorted entries, one mtime, root-owned, normalised modes."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "root", "root"
        info.mode = 0o755 if info.isdir() or info.name.endswith(".sh") else 0o644
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [tree, *sorted(tree.rglob("*"))]:
            tar.add(path, arcname=str(path.relative_to(tree.parent)), recursive=False, filter=normalise)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=epoch) as gz:
        gz.write(buffer.getvalue())
    tmp.replace(out)


def build(platform: str, python: str, out: Path) -> Path:
    if platform in NO_WHEELS:
        raise BundleError(f"no bundle for {platform}: {NO_WHEELS[platform]}; see README, Install, 32-bit Raspberry Pi OS")
    if platform not in MACHINES:
        raise BundleError(f"PLATFORM must be one of {', '.join(MACHINES)}, got {platform!r}")
    if python not in PYTHONS:
        raise BundleError(f"PYTHON must be one of {', '.join(PYTHONS)}, got {python!r}")
    from agent import __version__

    machine, epoch = MACHINES[platform], build_epoch()
    build_info = {"revision": revision(), "build_date": time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(epoch))}
    name = bundle_name(__version__, platform, python)
    with tempfile.TemporaryDirectory(prefix="pktagent-bundle-") as tmp:
        work = Path(tmp)
        tree = work / name
        (tree / "wheels").mkdir(parents=True)
        download(build_wheel(work, build_info), machine, python, work / "download")
        wheels = {w.name: w for w in map(read_wheel, (work / "download").glob("*.whl"))}
        env = environment(machine, python)
        keep: dict[str, Wheel] = {}
        for lock, extras in LOCKS.items():
            locked = closure(wheels, extras, env)
            title = f"pktagent{'[' + ','.join(extras) + ']' if extras else ''} {__version__} for {platform}, CPython {python}"
            (tree / lock).write_text(lock_text(locked, title))
            keep.update((w.name, w) for w in locked)
        for wheel in keep.values():  # only what the target needs: pip may have added wheels for this machine's markers
            shutil.copy2(wheel.path, tree / "wheels" / wheel.path.name)
        for script in ("install.sh", "sync_venv.py"):
            shutil.copy2(HERE / script, tree / script)
        shutil.copy2(HERE / "config.yml", tree / "config.yml")
        (tree / "pktagent.service").write_text(render_unit())
        fields = {"VERSION": __version__, "REVISION": build_info["revision"], "BUILD_DATE": build_info["build_date"], "PLATFORM": platform}
        fields |= {"MACHINE": machine, "PYTHON": python}
        (tree / "bundle.env").write_text("".join(f"BUNDLE_{k}='{v}'\n" for k, v in fields.items()))
        out.mkdir(parents=True, exist_ok=True)
        target = out / f"{name}.tar.gz"
        write_tarball(tree, target, epoch)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", required=True, help="linux_aarch64 or linux_x86_64")
    parser.add_argument("--python", default=DEFAULT_PYTHON, help=f"the target's Python, X.Y (default {DEFAULT_PYTHON})")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    try:
        target = build(args.platform, args.python, args.out)
    except BundleError as e:
        print(f"bundle: BundleError: {e}", file=sys.stderr)
        return 1
    print(f"{target} ({target.stat().st_size / 1e6:.1f} MB, sha256 {hashlib.sha256(target.read_bytes()).hexdigest()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
