"""A real run of the pktagent role on this machine, and the agent it installs capturing as its service user.

site.yml runs against a one-host inventory (connection local, become root through su) with the
service step off (no systemd as PID 1 here; tests/dist/test_systemd.py boots one for the unit): in
check mode on the fresh host, for real (the default install: a bundle built on the controller with
`make bundle`, installed offline with --require-hashes), again (no change), in check mode on the
converged host (no change), and at the end with ``pktagent_state: absent``. The install is a test instance: user, unit and
directories are all named ``pktagent-test<pid>``, so the test never touches a real deployment nor another run, and it
removes them when it ends. The installed agent is then started the way its unit starts it (the
unit's user, ambient capabilities and command line, under setpriv) inside the receiver namespace
of the ``veth`` fixture, and counts exactly what tcpreplay sends from the sender namespace.
"""

from __future__ import annotations

import configparser
import grp
import importlib.util
import json
import os
import platform
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pcapgen as g
import pytest
import yaml
from ansible_cli import ANSIBLE, ansible_tool, run_ansible
from conftest import ROOT, need, need_root, need_tool
from netns import VethPair
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__

HOST = "pktagent-ci"
# User, group, unit and directories of the test instance: the pid keeps two runs on one machine apart.
NAME = f"pktagent-test{os.getpid() % 100000}"
INSTALL_DIR = Path("/opt") / NAME
CONFIG_DIR = Path("/etc") / NAME
STATE_DIR = Path("/var/lib") / NAME
UNIT = Path("/etc/systemd/system") / f"{NAME}.service"
VENV = INSTALL_DIR / "venv"
LISTEN = "127.0.0.1:10464"  # inside the receiver namespace, which has a loopback of its own
PASSWORD = "s3cret-Passw0rd-never-logged"
OTLP_TOKEN = "otlp-T0ken-never-logged"  # in the authorization header the agent sends its OTLP collector
OTLP_ENDPOINT = "http://127.0.0.1:4318/v1/metrics"  # a collector inside the receiver namespace (the live test starts one)
SYSTEM_PYTHON = "/usr/bin/python3"  # the target's Python, as on a Pi; not the controller's venv

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.M,
)
TASK = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?P<name>.+?)\] \*+$")


# -- running Ansible ------------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]
    changed: list[str]  # names of the tasks that reported a change, in order


def parse_run(returncode: int, output: str) -> Run:
    recap = {m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(output.split("PLAY RECAP")[-1])}
    changed: list[str] = []
    task = ""
    for line in output.splitlines():
        if m := TASK.match(line):
            task = m["name"]
        elif line.startswith("changed: [") and task not in changed:
            changed.append(task)
    return Run(returncode, output, recap, changed)


def ansible_playbook(inventory: Path, *args: str, netns: str | None = None) -> Run:
    r = run_ansible("ansible-playbook", "-i", str(inventory), "site.yml", *args, timeout=600, netns=netns)
    return parse_run(r.returncode, r.stdout + r.stderr)


def local_host(**host_vars: object) -> dict[str, object]:
    return {"ansible_connection": "local", "ansible_python_interpreter": SYSTEM_PYTHON, **host_vars}


def write_inventory(path: Path, agents: dict[str, dict[str, object]], prometheus: dict[str, dict[str, object]] | None = None) -> Path:
    inventory = {"all": {"children": {"pktagent": {"children": {"site_ci": {"hosts": agents}}}, "prometheus": {"hosts": prometheus or {}}}}}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path


# -- the deployment ---------------------------------------------------------------------------------


def remove_test_instance() -> None:
    """Everything the role creates for the test instance (and the state directory systemd would make)."""
    for path in (INSTALL_DIR, CONFIG_DIR, STATE_DIR):
        shutil.rmtree(path, ignore_errors=True)
    UNIT.unlink(missing_ok=True)
    subprocess.run(["userdel", NAME], capture_output=True)
    subprocess.run(["groupdel", NAME], capture_output=True)


@dataclass
class Deployment:
    work: Path
    inventory: Path
    file_sd: Path
    first: Run
    second: Run
    check_fresh: Run
    check_converged: Run


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    need_root()
    need(Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} (Debian's python3, with python3-venv)")
    need_tool("su")
    ansible_tool("ansible-playbook")
    for module in ("passlib", "bcrypt"):  # password_hash('bcrypt') on the controller
        need(importlib.util.find_spec(module) is not None, f"the {module} module (pip install -e '.[dev]' installs libpass and bcrypt)")
    work = tmp_path_factory.mktemp("ansible")
    file_sd = work / "file_sd"
    agent_vars = local_host(
        ansible_become_method="su",
        pktagent_version=__version__,
        pktagent_manage_service=False,
        pktagent_service_name=NAME,
        pktagent_system_user=NAME,
        pktagent_system_group=NAME,
        pktagent_install_dir=str(INSTALL_DIR),
        pktagent_config_dir=str(CONFIG_DIR),
        pktagent_interfaces=["pkt-rx"],
        pktagent_promiscuous=True,
        pktagent_bpf_filter="not udp port 9999",
        pktagent_local_networks=["10.9.0.0/16", "fd00:9::/64"],
        pktagent_devices=[{"name": "sender", "macs": [g.MAC_A]}],
        pktagent_web_listen_address=LISTEN,
        pktagent_web_basic_auth_users={"prometheus": PASSWORD},
        pktagent_otlp_enabled=True,
        pktagent_otlp_endpoint=OTLP_ENDPOINT,
        pktagent_otlp_headers={"authorization": f"Bearer {OTLP_TOKEN}"},
        pktagent_otlp_interval_seconds=1,
        pktagent_otlp_timeout_seconds=5,
        pktagent_host_role="sensor",
    )
    inventory = write_inventory(work / "inventory.yml", {HOST: agent_vars}, {HOST: {"pktagent_file_sd_dir": str(file_sd)}})
    remove_test_instance()  # what an interrupted earlier run left
    try:
        check_fresh = ansible_playbook(inventory, "--check")
        assert check_fresh.returncode == 0, check_fresh.output[-6000:]
        assert not INSTALL_DIR.exists() and not CONFIG_DIR.exists() and not UNIT.exists()  # check mode changed nothing
        first = ansible_playbook(inventory, "--diff")
        assert first.returncode == 0, first.output[-6000:]
        second = ansible_playbook(inventory, "-v")
        assert second.returncode == 0, second.output[-6000:]
        check_converged = ansible_playbook(inventory, "--check", "--diff")
        assert check_converged.returncode == 0, check_converged.output[-6000:]
        yield Deployment(work, inventory, file_sd, first, second, check_fresh, check_converged)
    finally:
        remove_test_instance()


def bundle_tree() -> Path:
    """The unpacked bundle the role left on the host."""
    return INSTALL_DIR / "bundles" / f"pktagent-{__version__}-linux_{platform.machine()}"


def read_unit(path: Path = UNIT) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return dict(parser["Service"])


# -- the role's run -----------------------------------------------------------------------------------


def test_first_run_installs_everything(deployment: Deployment) -> None:
    run = deployment.first
    assert run.recap[HOST]["failed"] == 0
    assert run.recap[HOST]["unreachable"] == 0
    expected = {
        "pktagent : Create the pktagent system group",
        "pktagent : Create the pktagent system user, without a login shell",
        "pktagent : Create the install directories",
        "pktagent : Copy the bundle to the host",
        "pktagent : Unpack the bundle",
        "pktagent : Create the virtual environment with the system's Python",
        "pktagent : Install pktagent from the bundle's wheels, each checked against the lock's sha256",
        "pktagent : Create the config directory",
        "pktagent : Write the agent's config, checked by pktagent check-config",
        "pktagent : Write the web config (TLS, basic auth with bcrypt hashes)",
        "pktagent : Write the systemd unit",
        "pktagent : Create the file_sd directory",
        "pktagent : Write the Prometheus file_sd targets of every agent",
    }
    # apt changes something only on a machine that lacked python3-venv.
    assert set(run.changed) - expected <= {"pktagent : Install the Debian packages the virtual environment needs"}
    assert expected <= set(run.changed)
    # The service step is off: no systemd call was made, so no handler ran.
    assert "skipping: [pktagent-ci]" in run.output.split("RUNNING HANDLER [pktagent : Restart pktagent]")[1].split("TASK")[0]


def test_second_run_changes_nothing(deployment: Deployment) -> None:
    recap = deployment.second.recap[HOST]
    assert (recap["changed"], recap["failed"], recap["unreachable"]) == (0, 0, 0)
    assert deployment.second.changed == []
    # Same bundle, same lock: the install step is skipped on a converged host.
    task = "TASK [pktagent : Install pktagent from the bundle's wheels, each checked against the lock's sha256]"
    assert "skipping: [pktagent-ci]" in deployment.second.output.split(task)[1].split("TASK [")[0]


def test_check_mode_on_a_fresh_host(deployment: Deployment) -> None:
    """--check before anything is installed: no failure (nothing to ask the missing agent), and it names what it would change."""
    run = deployment.check_fresh
    assert (run.recap[HOST]["failed"], run.recap[HOST]["unreachable"]) == (0, 0)
    for task in (
        "pktagent : Create the pktagent system user, without a login shell",
        "pktagent : Copy the bundle to the host",
        "pktagent : Create the virtual environment with the system's Python",
        "pktagent : Write the systemd unit",
    ):
        assert task in run.changed, task
    assert "TASK [pktagent : Read the installed version]" in run.output
    assert "skipping: [pktagent-ci]" in run.output.split("TASK [pktagent : Read the installed version]")[1].split("TASK [")[0]


def test_check_mode_on_a_converged_host_changes_nothing(deployment: Deployment) -> None:
    recap = deployment.check_converged.recap[HOST]
    assert (recap["changed"], recap["failed"], recap["unreachable"]) == (0, 0, 0)
    assert deployment.check_converged.changed == []
    assert "--- before" not in deployment.check_converged.output  # --diff: no file would differ


def test_secrets_stay_out_of_the_output(deployment: Deployment) -> None:
    """The first run shows diffs (--diff), the second every result (-v): neither shows the password, its hash or the OTLP token."""
    users = yaml.safe_load((CONFIG_DIR / "web-config.yml").read_text())["basic_auth_users"]
    assert f"Bearer {OTLP_TOKEN}" in (CONFIG_DIR / "config.yml").read_text()  # it did reach the agent's config
    for run in (deployment.first, deployment.second):
        assert PASSWORD not in run.output
        assert users["prometheus"] not in run.output
        assert OTLP_TOKEN not in run.output
    assert "--- before" in deployment.first.output  # --diff did show the other files
    config_task = deployment.first.output.split("TASK [pktagent : Write the agent's config, checked by pktagent check-config]")[1].split("TASK [")[0]
    assert "changed: [pktagent-ci]" in config_task and "--- before" not in config_task and "otlp" not in config_task, config_task  # no_log: no diff


def test_service_user_has_no_login_shell(deployment: Deployment) -> None:
    user = pwd.getpwnam(NAME)
    assert user.pw_shell == "/usr/sbin/nologin"
    assert user.pw_uid < 1000  # a system user
    assert user.pw_dir == str(STATE_DIR)
    assert grp.getgrgid(user.pw_gid).gr_name == NAME
    assert [group.gr_name for group in grp.getgrall() if NAME in group.gr_mem] == []


def test_virtualenv_has_the_pinned_version(deployment: Deployment) -> None:
    version = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('pktagent'))"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == __version__
    cli = subprocess.run([str(VENV / "bin" / "pktagent"), "--version"], capture_output=True, text=True, check=True)
    bundle = dict(line.split("=", 1) for line in (bundle_tree() / "bundle.env").read_text().splitlines())
    assert cli.stdout.splitlines()[0] == f"pktagent, version {__version__} (revision: {bundle['BUNDLE_REVISION'].strip(chr(39))})"
    # Built on the system's Python, not on the controller's.
    assert f"home = {Path(SYSTEM_PYTHON).parent}" in (VENV / "pyvenv.cfg").read_text()


def test_venv_holds_exactly_the_bundles_locked_wheels(deployment: Deployment) -> None:
    """The default install: the bundle make built on the controller, copied, and installed from its own wheels alone."""
    lock = (bundle_tree() / "requirements.lock").read_text()
    assert (INSTALL_DIR / "installed.lock").read_text() == lock
    built = ROOT / "dist" / f"{bundle_tree().name}.tar.gz"
    assert (INSTALL_DIR / "bundles" / built.name).read_bytes() == built.read_bytes()
    locked = sorted(line.split(" ")[0] for line in lock.splitlines() if "==" in line)
    assert all(" --hash=sha256:" in line for line in lock.splitlines() if "==" in line)
    freeze = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "freeze", "--all"], capture_output=True, text=True, check=True)
    installed = sorted(line.lower().replace("_", "-") for line in freeze.stdout.splitlines() if not line.startswith(("pip==", "setuptools==")))
    assert installed == locked


def test_config_passes_check_config(deployment: Deployment) -> None:
    config = CONFIG_DIR / "config.yml"
    check = subprocess.run([str(VENV / "bin" / "pktagent"), "check-config", str(config)], capture_output=True, text=True)
    assert (check.returncode, check.stdout) == (0, f"{config}: valid\n")
    # check-config warns, without failing, about an interface this host lacks (the test's veth may be gone by now).
    if "pkt-rx" not in [name for _, name in socket.if_nameindex()]:
        assert check.stderr.startswith(f"pktagent: warning: {config}: config key capture.interfaces[0]: this host has no interface 'pkt-rx'")
        assert len(check.stderr.splitlines()) == 1
    else:
        assert check.stderr == ""
    data = yaml.safe_load(config.read_text())
    assert data == {
        "capture": {"interfaces": ["pkt-rx"], "promiscuous": True, "bpf_filter": "not udp port 9999"},
        "pipeline": {"sampling_rate": 1.0},
        "devices": {"inventory": [{"name": "sender", "macs": [g.MAC_A]}]},
        "web": {"listen": LISTEN},
        "state_dir": str(STATE_DIR),
        "local_networks": ["10.9.0.0/16", "fd00:9::/64"],
        "otlp": {
            "enabled": True,
            "endpoint": OTLP_ENDPOINT,
            "protocol": "http/protobuf",
            "headers": [f"authorization=Bearer {OTLP_TOKEN}"],
            "interval_seconds": 1.0,
            "timeout_seconds": 5.0,
        },
    }
    st = config.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, grp.getgrgid(st.st_gid).gr_name) == (0o640, 0, NAME)


def test_web_config_is_exporter_toolkit_format(deployment: Deployment) -> None:
    import bcrypt

    web_config = CONFIG_DIR / "web-config.yml"
    check = subprocess.run([need_tool("promtool"), "check", "web-config", str(web_config)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    data = yaml.safe_load(web_config.read_text())
    assert list(data) == ["basic_auth_users"]
    hashed = data["basic_auth_users"]["prometheus"]
    assert hashed.startswith("$2b$10$")
    assert bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert stat.S_IMODE(web_config.stat().st_mode) == 0o640


def test_unit_file_passes_systemd_analyze(deployment: Deployment) -> None:
    analyze = need_tool("systemd-analyze")
    verify = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True, cwd="/")
    assert (verify.returncode, verify.stdout, verify.stderr) == (0, "", "")
    unit = read_unit()
    assert unit["ExecStart"] == (f"{VENV}/bin/pktagent run --log.level info --config {CONFIG_DIR}/config.yml --web.config.file {CONFIG_DIR}/web-config.yml")
    assert {k: unit[k] for k in ("User", "Group", "AmbientCapabilities", "CapabilityBoundingSet", "StateDirectory", "Restart", "LimitNOFILE")} == {
        "LimitNOFILE": "65536",  # systemd's default of 1024 ran out under 1,100 idle scrape connections
        "User": NAME,
        "Group": NAME,
        "AmbientCapabilities": "CAP_NET_RAW",
        "CapabilityBoundingSet": "CAP_NET_RAW",
        "StateDirectory": NAME,
        "Restart": "on-failure",
    }
    assert {k: unit[k] for k in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp")} == {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }
    security = subprocess.run([analyze, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, cwd="/")
    exposure = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert exposure, security.stdout + security.stderr
    assert float(exposure[1]) < 4.0  # systemd calls < 4 "OK"; an unhardened service scores 9.6


def test_a_rebuilt_bundle_of_the_same_version_is_installed(deployment: Deployment) -> None:
    """Another build (another build date baked into pktagent's wheel: other bytes, same version), given in pktagent_bundle:
    copied, unpacked and installed; pktagent is replaced although pip would keep a release of the same version."""
    out = deployment.work / "rebuilt"
    built = subprocess.run(
        ["make", "--no-print-directory", "bundle", f"PLATFORM=linux_{platform.machine()}", f"DIST={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1767225600"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (bundle,) = out.glob("pktagent-*.tar.gz")
    run = ansible_playbook(deployment.inventory, "-e", json.dumps({"pktagent_bundle": str(bundle)}))
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed == [
        "pktagent : Copy the bundle to the host",
        "pktagent : Unpack the bundle",
        "pktagent : Install pktagent from the bundle's wheels, each checked against the lock's sha256",
    ]
    cli = subprocess.run([str(VENV / "bin" / "pktagent"), "--version"], capture_output=True, text=True, check=True)
    assert cli.stdout.splitlines()[1] == "  build date:       20260101-00:00:00"


def test_file_sd_targets_pass_promtool(deployment: Deployment) -> None:
    targets = deployment.file_sd / "pktagent.json"
    assert json.loads(targets.read_text()) == [{"labels": {"role": "sensor", "site": "ci"}, "targets": [f"{HOST}:10464"]}]
    scrape = (ANSIBLE / "examples" / "prometheus-scrape.yml").read_text()
    assert "/etc/prometheus/file_sd/pktagent.json" in scrape
    prometheus_yml = deployment.work / "prometheus.yml"
    prometheus_yml.write_text(scrape.replace("/etc/prometheus/file_sd/pktagent.json", str(targets)))
    check = subprocess.run([need_tool("promtool"), "check", "config", str(prometheus_yml)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


# -- the installed agent, started as its unit starts it --------------------------------------------------


def unit_command(*, with_capabilities: bool = True) -> list[str]:
    """The unit's ExecStart as its User= with its ambient capabilities (or none), in the environment systemd gives."""
    unit = read_unit()
    ambient = [c.removeprefix("CAP_").lower() for c in unit["AmbientCapabilities"].split()] if with_capabilities else []
    bounding = [c.removeprefix("CAP_").lower() for c in unit["CapabilityBoundingSet"].split()] if with_capabilities else []
    user = pwd.getpwnam(unit["User"])
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", f"HOME={user.pw_dir}", f"USER={user.pw_name}", f"LOGNAME={user.pw_name}"]
    setpriv = [
        need_tool("setpriv"),
        f"--reuid={unit['User']}",
        f"--regid={unit['Group']}",
        "--init-groups",
        "--inh-caps=" + ",".join(["-all", *(f"+{c}" for c in ambient)]),
        "--ambient-caps=" + ",".join(["-all", *(f"+{c}" for c in ambient)]),
        "--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in bounding)]),
    ]
    if unit.get("NoNewPrivileges") == "yes":
        setpriv.append("--no-new-privs")
    return ["env", "-i", *env, *setpriv, *shlex.split(unit["ExecStart"])]


FETCH = """
import base64, sys, time, urllib.error, urllib.request
url, auth, want, deadline = sys.argv[1], sys.argv[2], int(sys.argv[3]), time.monotonic() + float(sys.argv[4])
request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()})
while True:
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    except OSError as e:
        status, body = 0, str(e)
    if status == want or time.monotonic() > deadline:
        break
    time.sleep(0.1)
print(status)
print(body, end="")
"""


def fetch(netns: str, path: str, *, want: int = 200, wait: float = 0.0, auth: str = f"prometheus:{PASSWORD}") -> tuple[int, str]:
    """GET from the agent inside the namespace (with the basic auth credentials the web config has)."""
    r = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", FETCH, f"http://{LISTEN}{path}", auth, str(want), str(wait)],
        capture_output=True,
        text=True,
        timeout=wait + 30,
    )
    status, _, body = r.stdout.partition("\n")
    return int(status or 0), body


# An OTLP/HTTP collector for the live test, run inside the receiver namespace: one JSON line per export
# (path, authorization header, metric names) appended to the file it is given.
COLLECTOR = """
import gzip, json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        names = sorted({m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
        with open(sys.argv[2], "a") as out:
            print(json.dumps({"path": self.path, "authorization": self.headers.get("Authorization"), "metrics": names}), file=out)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def exports(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples}


def known_traffic(tmp_path: Path) -> tuple[Path, dict[tuple[str, str, str], tuple[int, int]], int]:
    """A capture with known answers: (file, {(network, transport, direction): (packets, bytes)}, frames the BPF filter drops)."""
    cap = g.Capture()
    expected: dict[tuple[str, str, str], tuple[int, int]] = {}
    ts = 0

    def add(key: tuple[str, str, str] | None, frame: bytes) -> None:
        nonlocal ts
        frame = g.pad(frame)
        cap.add(ts, frame)
        ts += 1000
        if key is not None:
            packets, octets = expected.get(key, (0, 0))
            expected[key] = (packets + 1, octets + len(frame))

    v4 = g.eth(g.ETH_IPV4)
    for i in range(30):
        add(("ipv4", "tcp", "internal"), v4 + g.ipv4(g.TCP, "10.9.0.1", "10.9.0.2", g.tcp(40000 + i, 80, g.ACK, seq=i), ident=i))
    for i in range(20):
        add(("ipv4", "udp", "internal"), v4 + g.ipv4(g.UDP, "10.9.0.1", "10.9.0.2", g.udp(50000 + i, 53, b"q" * 12), ident=100 + i))
    for i in range(10):
        add(("ipv6", "udp", "internal"), g.eth(g.ETH_IPV6) + g.ipv6(g.UDP, "fd00:9::1", "fd00:9::2", g.udp(50000 + i, 53, b"v6")))
    # From outside local_networks: inbound here, though the agent's default list (192.168.0.0/16) would call it internal.
    for i in range(4):
        add(("ipv4", "udp", "inbound"), v4 + g.ipv4(g.UDP, "192.168.5.1", "10.9.0.2", g.udp(6000 + i, 53), ident=200 + i))
    # Dropped by the role's bpf_filter, "not udp port 9999".
    for i in range(5):
        add(None, v4 + g.ipv4(g.UDP, "10.9.0.1", "10.9.0.2", g.udp(7000 + i, 9999), ident=300 + i))
    return cap.write(tmp_path / "traffic.pcap"), expected, 5


@pytest.mark.live
def test_installed_agent_captures_as_the_service_user(deployment: Deployment, veth: VethPair, tmp_path: Path) -> None:
    tcpreplay = need_tool("tcpreplay")
    pcap, expected, filtered = known_traffic(tmp_path)
    STATE_DIR.mkdir(mode=0o750, exist_ok=True)  # what StateDirectory= makes
    shutil.chown(STATE_DIR, NAME, NAME)
    received = tmp_path / "otlp.jsonl"
    port = OTLP_ENDPOINT.split(":")[2].split("/")[0]
    collector = subprocess.Popen(veth.in_receiver(sys.executable, "-c", COLLECTOR, port, str(received)), stderr=subprocess.PIPE, text=True)
    agent = subprocess.Popen(veth.in_receiver(*unit_command()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        status, body = fetch(veth.receiver, "/health", wait=20)
        assert status == 200, (body, agent.poll(), agent.stderr.read() if agent.poll() is not None else "")
        assert json.loads(body)["captures"][0]["interface"] == "pkt-rx"
        # The agent took the role's web config: the bcrypt hash checks out, and nothing is served without it.
        assert fetch(veth.receiver, "/metrics", auth="prometheus:wrong")[0] == 401
        assert fetch(veth.receiver, "/metrics", auth="")[0] == 401

        # Only CAP_NET_RAW, yet the interface is promiscuous (PACKET_ADD_MEMBERSHIP needs no CAP_NET_ADMIN).
        # ip netns exec, env and setpriv each exec the next: the agent is the process Popen started.
        status_file = Path(f"/proc/{agent.pid}/status").read_text()
        caps = dict(line.split(":\t") for line in status_file.splitlines() if line.startswith("Cap"))
        assert {k: int(v, 16) for k, v in caps.items()} == {"CapInh": 1 << 13, "CapPrm": 1 << 13, "CapEff": 1 << 13, "CapBnd": 1 << 13, "CapAmb": 1 << 13}
        link = subprocess.run(veth.in_receiver("ip", "-d", "link", "show", "pkt-rx"), capture_output=True, text=True, check=True).stdout
        assert " promiscuity 1 " in link

        sent = subprocess.run(veth.in_sender(tcpreplay, "-q", "-i", "pkt-tx", str(pcap)), capture_output=True, text=True)
        assert sent.returncode == 0, sent.stderr
        total = sum(p for p, _ in expected.values())
        assert f"Actual: {total + filtered} packets" in sent.stdout

        deadline = time.monotonic() + 15
        while True:
            status, text = fetch(veth.receiver, "/metrics")
            got = samples(text)
            captured = got.get(("pktagent_packets_captured_total", frozenset({("interface", "pkt-rx")})), 0)
            if captured >= total or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        time.sleep(0.5)  # anything late would show now
        status, text = fetch(veth.receiver, "/metrics")
        assert status == 200
        got = samples(text)
        assert got[("pktagent_packets_captured_total", frozenset({("interface", "pkt-rx")}))] == total == 64
        traffic = {
            (labels["network"], labels["transport"], labels["direction"]): value
            for (name, key), value in got.items()
            if name == "pktagent_traffic_packets_total" and value
            for labels in [dict(key)]
        }
        assert traffic == {k: float(p) for k, (p, _) in expected.items()}
        octets = {
            (labels["network"], labels["transport"], labels["direction"]): value
            for (name, key), value in got.items()
            if name == "pktagent_traffic_bytes_total" and value
            for labels in [dict(key)]
        }
        assert octets == {k: float(b) for k, (_, b) in expected.items()}
        assert sum(v for (name, _), v in got.items() if name == "pktagent_decode_errors_total") == 0

        # The role's otlp: section: the agent pushes to the collector every second, with the token from pktagent_otlp_headers.
        deadline = time.monotonic() + 15
        while not exports(received) and time.monotonic() < deadline and collector.poll() is None:
            time.sleep(0.2)
        first = exports(received)
        assert first, collector.stderr.read() if collector.poll() is not None else "no OTLP export within 15 s"
        assert (first[0]["path"], first[0]["authorization"]) == ("/v1/metrics", f"Bearer {OTLP_TOKEN}")
        assert "pktagent.packets.captured" in first[0]["metrics"]  # type: ignore[operator]
        status, text = fetch(veth.receiver, "/metrics")
        assert samples(text).get(("pktagent_otlp_exports_total", frozenset({("result", "success")})), 0) >= 1

        # The role's health check, run in the namespace against the running agent: it passes and changes nothing.
        health = ansible_playbook(
            deployment.inventory,
            "--tags",
            "pktagent_health",
            "-e",
            json.dumps({"pktagent_manage_service": True, "pktagent_health_check_retries": 3, "pktagent_health_check_delay": 1}),
            netns=veth.receiver,
        )
        assert health.returncode == 0, health.output[-4000:]
        assert "ok: [pktagent-ci]" in health.output.split("TASK [pktagent : Wait for /health to answer 200]")[1]
        assert health.recap[HOST]["changed"] == 0
        assert PASSWORD not in health.output
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=20)
        collector.terminate()
        collector.communicate(timeout=20)
    assert agent.returncode == 0, err


@pytest.mark.live
def test_installed_agent_without_the_capability_says_so(deployment: Deployment, veth: VethPair) -> None:
    r = subprocess.run(veth.in_receiver(*unit_command(with_capabilities=False)), capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("pktagent: CapturePermissionError: no permission to capture on pkt-rx (")


@pytest.mark.live
def test_otlp_over_grpc_installs_the_grpc_exporter(deployment: Deployment, veth: VethPair) -> None:
    """gRPC needs pktagent[grpc], which check-config does not ask for but run does: the role installs it, and the agent starts.

    This runs the role again with other settings, so it comes after every other test of the deployment.
    """
    run = ansible_playbook(deployment.inventory, "-e", json.dumps({"pktagent_otlp_protocol": "grpc", "pktagent_otlp_endpoint": "http://127.0.0.1:4317"}))
    assert run.returncode == 0, run.output[-6000:]
    # The default bundle again (the test before installed a rebuilt one), now with the gRPC lock.
    assert run.changed == [
        "pktagent : Copy the bundle to the host",
        "pktagent : Unpack the bundle",
        "pktagent : Install pktagent from the bundle's wheels, each checked against the lock's sha256",
        "pktagent : Write the agent's config, checked by pktagent check-config",
    ]
    assert (INSTALL_DIR / "installed.lock").read_text() == (bundle_tree() / "requirements-grpc.lock").read_text()
    assert OTLP_TOKEN not in run.output
    otlp = yaml.safe_load((CONFIG_DIR / "config.yml").read_text())["otlp"]
    assert (otlp["protocol"], otlp["endpoint"]) == ("grpc", "http://127.0.0.1:4317")
    found = subprocess.run([str(VENV / "bin" / "python"), "-c", "import opentelemetry.exporter.otlp.proto.grpc, grpc"], capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    STATE_DIR.mkdir(mode=0o750, exist_ok=True)
    shutil.chown(STATE_DIR, NAME, NAME)
    agent = subprocess.Popen(veth.in_receiver(*unit_command()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        status, body = fetch(veth.receiver, "/health", wait=20)
        assert status == 200, (body, agent.poll(), agent.stderr.read() if agent.poll() is not None else "")
    finally:
        agent.terminate()
        _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "grpc needs the gRPC exporter" not in err


def test_preflight_refuses_bad_otlp_settings_before_changing_anything(tmp_path: Path) -> None:
    """An HTTP endpoint without its path (the collector would get "/" and answer 404), or a header name with a space:
    the host fails in preflight, and the header's value stays out of the output."""
    need_root()
    inventory = write_inventory(tmp_path / "inventory.yml", {"ci-otlp": local_host(ansible_become=False)})
    settings = {
        "pktagent_otlp_enabled": True,
        "pktagent_otlp_endpoint": "http://collector.example:4318",
        "pktagent_otlp_headers": {"authorization": OTLP_TOKEN},
    }
    run = ansible_playbook(inventory, "--tags", "pktagent_configure", "-e", json.dumps(settings))
    assert run.returncode != 0 and run.recap["ci-otlp"]["failed"] == 1
    assert "TASK [pktagent : Assert the OTLP settings are well formed]" in run.output
    assert "must be the whole URL for http/protobuf, path included" in run.output
    assert run.changed == [] and OTLP_TOKEN not in run.output

    settings.update(pktagent_otlp_endpoint=OTLP_ENDPOINT, pktagent_otlp_headers={"x api key": OTLP_TOKEN})
    run = ansible_playbook(inventory, "--tags", "pktagent_configure", "-e", json.dumps(settings))
    assert run.returncode != 0 and run.recap["ci-otlp"]["failed"] == 1
    failed = run.output.split("TASK [pktagent : Assert the OTLP headers are a mapping of header names to values]")[1].split("PLAY RECAP")[0]
    assert "fatal: [ci-otlp]" in failed and "censored" in failed
    assert run.changed == [] and OTLP_TOKEN not in run.output


# -- the rollout ------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rollout_stops_at_the_first_host_that_fails(tmp_path: Path) -> None:
    """site.yml's health check fails on the canary (nothing listens there): the rollout stops before the next host."""
    agents = {
        f"ci-{name}": local_host(ansible_become=False, pktagent_web_listen_address=f"127.0.0.1:{closed_port()}", pktagent_health_check_delay=0)
        for name in ("a", "b", "c")
    }
    inventory = write_inventory(tmp_path / "inventory.yml", agents, {"ci-a": {}})
    run = ansible_playbook(
        inventory,
        "--tags",
        "pktagent_health,pktagent_targets",
        "-e",
        json.dumps({"pktagent_manage_service": True, "pktagent_health_check_retries": 1, "pktagent_file_sd_dir": str(tmp_path / "file_sd")}),
    )
    assert run.returncode != 0
    assert run.recap["ci-a"]["failed"] == 1
    assert "ci-b" not in run.recap and "[ci-b]" not in run.output
    assert "ci-c" not in run.recap and "[ci-c]" not in run.output
    assert "Write Prometheus file_sd targets" not in run.output
    assert not (tmp_path / "file_sd").exists()


# -- removal: the last of the deployment's tests ----------------------------------------------------------


def test_state_absent_removes_the_software_then_purge_the_rest(deployment: Deployment) -> None:
    """pktagent_state: absent keeps the config, the state directory and the user (like install.sh --uninstall); pktagent_purge removes them."""
    STATE_DIR.mkdir(mode=0o750, exist_ok=True)
    (STATE_DIR / "devices.db").write_bytes(b"state")
    check = ansible_playbook(deployment.inventory, "--check", "-e", json.dumps({"pktagent_state": "absent"}))
    assert check.returncode == 0, check.output[-6000:]
    assert VENV.exists() and UNIT.exists()  # check mode removed nothing
    run = ansible_playbook(deployment.inventory, "-e", json.dumps({"pktagent_state": "absent"}))
    assert run.returncode == 0, run.output[-6000:]
    assert run.changed == ["pktagent : Remove the unit", "pktagent : Remove the virtual environment and the bundles"]
    assert check.changed == run.changed
    assert not INSTALL_DIR.exists() and not UNIT.exists()
    assert (CONFIG_DIR / "config.yml").exists() and (STATE_DIR / "devices.db").read_bytes() == b"state"
    assert pwd.getpwnam(NAME).pw_name == NAME
    again = ansible_playbook(deployment.inventory, "-e", json.dumps({"pktagent_state": "absent"}))
    assert (again.returncode, again.changed) == (0, [])

    purge = ansible_playbook(deployment.inventory, "-e", json.dumps({"pktagent_state": "absent", "pktagent_purge": True}))
    assert purge.returncode == 0, purge.output[-6000:]
    # userdel takes the user's own group with it; the group task is there for a group left behind.
    assert purge.changed == ["pktagent : Remove the config and the state directory", "pktagent : Remove the system user"]
    assert not CONFIG_DIR.exists() and not STATE_DIR.exists()
    with pytest.raises(KeyError):
        pwd.getpwnam(NAME)
    with pytest.raises(KeyError):
        grp.getgrnam(NAME)
