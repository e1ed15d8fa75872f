"""The install bundle's parts that need no Debian root: install.sh's refusals, the builder's lock closure, its unit and tarball.

The slow end-to-end tests (a bundle installed in an arm64 root, the unit under a booted
systemd) are in tests/dist (`make test-dist`).
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import ROOT, need_tool
from packaging.requirements import Requirement

INSTALL_SH = ROOT / "bundle" / "install.sh"


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pktagent_bundle_build", ROOT / "bundle" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = load_builder()


# -- install.sh -------------------------------------------------------------------------------------

# A stand-in for the system's python3 that answers install.sh's three questions: version and
# machine, "older than 3.11?", "can it make a venv?".
FAKE_PYTHON = """#!/bin/sh
case "$2" in
  *'print("%d.%d %s"'*) echo "$FAKE_FOUND" ;;
  *'version_info < (3, 11)'*) [ "$FAKE_OLD" = 1 ] && exit 1; exit 0 ;;
  *ensurepip*) exit "$FAKE_NO_VENV" ;;
esac
exit 0
"""


def bundle_dir(tmp_path: Path, machine: str = "aarch64", python: str = "3.11") -> Path:
    tree = tmp_path / "bundle"
    tree.mkdir()
    shutil.copy2(INSTALL_SH, tree / "install.sh")
    fields = {"VERSION": "0.1.0", "REVISION": "abc", "PLATFORM": f"linux_{machine}", "MACHINE": machine, "PYTHON": python}
    (tree / "bundle.env").write_text("".join(f"BUNDLE_{k}='{v}'\n" for k, v in fields.items()))
    return tree


def install_sh(tree: Path, *args: str, found: str = "3.11 aarch64", old: bool = False, no_venv: bool = False) -> subprocess.CompletedProcess[str]:
    python = tree.parent / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    env = {"PATH": os.environ["PATH"], "PKTAGENT_PYTHON": str(python), "FAKE_FOUND": found, "FAKE_OLD": str(int(old)), "FAKE_NO_VENV": str(int(no_venv))}
    return subprocess.run(["sh", str(tree / "install.sh"), *args], capture_output=True, text=True, env=env, timeout=60)


def test_install_sh_passes_shellcheck() -> None:
    done = subprocess.run([need_tool("shellcheck"), "--shell=sh", str(INSTALL_SH)], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "")


@pytest.mark.parametrize(
    ("found", "kwargs", "bundle", "message"),
    [
        ("3.9 aarch64", {"old": True}, ("aarch64", "3.11"), "pktagent needs Python 3.11 or newer; {python} is 3.9"),
        (
            "3.11 armv7l",
            {},
            ("aarch64", "3.11"),
            "this is 32-bit ARM (armv7l): numpy and pcapy-ng publish no wheels for it, so there is no bundle; see README, Install, 32-bit Raspberry Pi OS",
        ),
        (
            "3.11 aarch64",
            {},
            ("x86_64", "3.11"),
            "this bundle is for x86_64 and this system is aarch64: use the 0.1.0 bundle for linux_aarch64 (make bundle PLATFORM=linux_aarch64)",
        ),
        (
            "3.13 aarch64",
            {},
            ("aarch64", "3.11"),
            "this bundle's wheels are for Python 3.11 and {python} is 3.13: build one with make bundle PLATFORM=linux_aarch64 PYTHON=3.13",
        ),
        ("3.11 aarch64", {"no_venv": True}, ("aarch64", "3.11"), "{python} cannot make a virtual environment: apt-get install python3-venv"),
    ],
    ids=["python-3.9", "armv7l", "other-machine", "other-python", "no-venv"],
)
def test_install_sh_refuses_a_target_it_cannot_serve(tmp_path: Path, found: str, kwargs: dict[str, bool], bundle: tuple[str, str], message: str) -> None:
    """One line, exit 1, before anything is changed (the stand-in Python would fail any later step)."""
    tree = bundle_dir(tmp_path, *bundle)
    done = install_sh(tree, "--no-systemd", found=found, **kwargs)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "install.sh: " + message.format(python=tmp_path / "python3") + "\n"


def test_install_sh_option_mistakes(tmp_path: Path) -> None:
    tree = bundle_dir(tmp_path)
    done = install_sh(tree, "--frobnicate")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == "install.sh: unknown option --frobnicate"
    assert done.stderr.splitlines()[1].startswith("usage: sh install.sh [--no-systemd] [--grpc]")
    done = install_sh(tree, "--purge")
    assert (done.returncode, done.stderr) == (1, "install.sh: --purge goes with --uninstall\n")
    done = install_sh(tree, "--help")
    assert done.returncode == 0 and "--uninstall" in done.stdout


def test_install_sh_without_systemd_running_says_use_no_systemd(tmp_path: Path) -> None:
    if Path("/run/systemd/system").exists():
        pytest.skip("systemd runs here: install.sh would go on and install the service")
    done = install_sh(bundle_dir(tmp_path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "install.sh: systemd is not running here: run install.sh --no-systemd (containers, chroots) and start pktagent yourself\n"


# -- the builder ------------------------------------------------------------------------------------


def run_builder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bundle" / "build.py"), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--platform", "linux_armv7l"],
            "no bundle for linux_armv7l: numpy and pcapy-ng publish no 32-bit ARM wheels on PyPI; see README, Install, 32-bit Raspberry Pi OS",
        ),
        (["--platform", "linux_riscv64"], "PLATFORM must be one of linux_aarch64, linux_x86_64, got 'linux_riscv64'"),
        (["--platform", "linux_aarch64", "--python", "3.10"], "PYTHON must be one of 3.11, 3.12, 3.13, got '3.10'"),
    ],
)
def test_builder_refuses_what_it_cannot_build(args: list[str], message: str, tmp_path: Path) -> None:
    done = run_builder(*args, "--out", str(tmp_path))
    assert (done.returncode, done.stdout, done.stderr) == (1, "", f"bundle: BundleError: {message}\n")
    assert list(tmp_path.iterdir()) == []


def wheel(name: str, version: str, *requires: str) -> object:
    return build.Wheel(Path(f"{name}.whl"), name, version, [Requirement(r) for r in requires])


def test_closure_follows_the_targets_markers_not_this_machines() -> None:
    """pip's download evaluates markers on the Python running it; the lock must follow the target's."""
    wheels = {
        "pktagent": wheel("pktagent", "0.1.0", "numpy>=1.26", "tomli; python_version < '3.12'", "grpcio; extra == 'grpc'"),
        "numpy": wheel("numpy", "2.4.6"),
        "tomli": wheel("tomli", "2.0.1"),
        "grpcio": wheel("grpcio", "1.85.3", "typing-extensions; platform_machine == 'aarch64'"),
        "typing-extensions": wheel("typing-extensions", "4.16.0"),
    }
    names = lambda locked: [w.name for w in locked]  # noqa: E731
    assert names(build.closure(wheels, (), build.environment("aarch64", "3.11"))) == ["numpy", "pktagent", "tomli"]
    assert names(build.closure(wheels, (), build.environment("aarch64", "3.13"))) == ["numpy", "pktagent"]
    assert names(build.closure(wheels, ("grpc",), build.environment("aarch64", "3.13"))) == ["grpcio", "numpy", "pktagent", "typing-extensions"]
    assert names(build.closure(wheels, ("grpc",), build.environment("x86_64", "3.13"))) == ["grpcio", "numpy", "pktagent"]
    del wheels["tomli"]
    with pytest.raises(build.BundleError, match=r"pktagent needs tomli; python_version < \"3.12\" on Python 3.11, and pip did not download it"):
        build.closure(wheels, (), build.environment("aarch64", "3.11"))
    wheels["numpy"] = wheel("numpy", "1.24.2")
    with pytest.raises(build.BundleError, match=r"pktagent needs numpy>=1\.26, pip downloaded numpy 1\.24\.2"):
        build.closure(wheels, (), build.environment("aarch64", "3.13"))


def test_platform_tags_reach_back_to_manylinux2014() -> None:
    tags = build.platform_tags("aarch64")
    assert tags[0] == "manylinux_2_36_aarch64"  # Debian 12's glibc: nothing newer
    assert tags[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert len(tags) == 36 - 17 + 2


def test_tarball_is_reproducible(tmp_path: Path) -> None:
    tree = tmp_path / "pktagent-0.1.0-linux_aarch64"
    (tree / "wheels").mkdir(parents=True)
    (tree / "install.sh").write_text("#!/bin/sh\n")
    (tree / "wheels" / "a.whl").write_bytes(b"wheel")
    build.write_tarball(tree, tmp_path / "one.tar.gz", 1767225600)
    (tree / "install.sh").touch()  # another mtime on disk: not in the tarball
    build.write_tarball(tree, tmp_path / "two.tar.gz", 1767225600)
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()


def test_bundle_unit_is_the_roles_template_with_its_defaults() -> None:
    """One unit for the role and the bundle: CAP_NET_RAW only, the role's hardening, LimitNOFILE."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(build.render_unit())
    unit = dict(parser["Service"])
    assert unit["ExecStart"] == "/opt/pktagent/venv/bin/pktagent run --log.level info --config /etc/pktagent/config.yml"
    assert {k: unit[k] for k in ("User", "Group", "AmbientCapabilities", "CapabilityBoundingSet", "NoNewPrivileges", "LimitNOFILE")} == {
        "User": "pktagent",
        "Group": "pktagent",
        "AmbientCapabilities": "CAP_NET_RAW",
        "CapabilityBoundingSet": "CAP_NET_RAW",
        "NoNewPrivileges": "yes",
        "LimitNOFILE": "65536",
    }
    assert (unit["StateDirectory"], unit["ProtectSystem"], unit["ExecReload"]) == ("pktagent", "strict", "/bin/sh -c 'kill -HUP $MAINPID'")


def test_default_config_passes_check_config() -> None:
    config = ROOT / "bundle" / "config.yml"
    done = subprocess.run([str(Path(sys.executable).parent / "pktagent"), "check-config", str(config)], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{config}: valid\n", "")


# -- sync_venv.py: what install.sh and the role install with -----------------------------------------


def tiny_wheel(directory: Path, name: str, version: str, body: str) -> Path:
    """A pure-Python wheel holding one module, built by hand (a wheel is a zip with its metadata and RECORD)."""
    import base64
    import hashlib
    import zipfile

    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}_mod.py": body,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},{len(text)}" for path, text in files.items()
    ]
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
        z.writestr(f"{info}/RECORD", "\n".join([*record, f"{info}/RECORD,,"]) + "\n")
    return path


def lock_for(*wheels: Path) -> str:
    import hashlib

    return "".join(f"{w.name.split('-')[0]}=={w.name.split('-')[1]} --hash=sha256:{hashlib.sha256(w.read_bytes()).hexdigest()}\n" for w in wheels)


def test_sync_venv_installs_only_hash_checked_wheels_and_removes_the_rest(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    pktagent = tiny_wheel(bundle / "wheels", "pktagent", "0.1.0", "X = 1\n")
    extra = tiny_wheel(bundle / "wheels", "extra", "1.0", "")
    marker = tmp_path / "installed.lock"
    sync = [str(venv / "bin" / "python"), str(ROOT / "bundle" / "sync_venv.py"), str(bundle)]

    def installed() -> list[str]:
        out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
        return sorted(out.split())

    (bundle / "both.lock").write_text(lock_for(pktagent, extra))
    done = subprocess.run([*sync, str(bundle / "both.lock"), str(marker)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert installed() == ["extra==1.0", "pktagent==0.1.0"]
    assert marker.read_text() == (bundle / "both.lock").read_text()

    # A lock without `extra`: it goes. A rebuilt pktagent of the same version: it is put in place.
    rebuilt = tiny_wheel(bundle / "wheels", "pktagent", "0.1.0", "X = 2\n")
    (bundle / "one.lock").write_text(lock_for(rebuilt))
    done = subprocess.run([*sync, str(bundle / "one.lock"), str(marker)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert installed() == ["pktagent==0.1.0"]
    x = subprocess.run([str(venv / "bin" / "python"), "-c", "import pktagent_mod; print(pktagent_mod.X)"], capture_output=True, text=True)
    assert x.stdout == "2\n"

    # A wheel whose bytes are not the lock's: pip refuses it, and the marker still names what is installed.
    tiny_wheel(bundle / "wheels", "pktagent", "0.1.0", "X = 3  # tampered\n")
    done = subprocess.run([*sync, str(bundle / "one.lock"), str(tmp_path / "other.lock")], capture_output=True, text=True)
    assert done.returncode != 0
    assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in done.stderr
    assert not (tmp_path / "other.lock").exists()
