"""What a new user copies from the README works as written: the example config, the capability advice, the bcrypt hint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from conftest import ROOT, need_root, need_tool
from test_cli import PKTAGENT, free_port, pktagent
from waiting import until

README = (ROOT / "README.md").read_text()


def readme_block(after: str, lang: str) -> str:
    """The first ``lang`` code block after the text ``after``."""
    start = README.index(after)
    match = re.compile(rf"^```{lang}\n(.*?)^```", re.S | re.M).search(README, start)
    assert match is not None, after
    return match.group(1)


def test_the_readme_example_config_passes_check_config_as_written(tmp_path: Path) -> None:
    path = tmp_path / "pktagent.yml"
    path.write_text(readme_block("A YAML file, whose sections follow the pipeline", "yaml"))
    done = pktagent("check-config", str(path))
    assert (done.returncode, done.stdout) == (0, f"{path}: valid\n"), done.stderr


def test_the_readme_scrape_config_uses_the_job_the_alerts_expect() -> None:
    import yaml

    config = yaml.safe_load(readme_block("## Scrape it with Prometheus", "yaml"))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["pktagent"]
    alerts = (ROOT / "grafana" / "rules" / "pktagent-alerts.yml").read_text()
    assert 'up{job="pktagent"}' in alerts
    rule_files = sorted(Path(p).name for p in config["rule_files"])
    assert rule_files == sorted(p.name for p in (ROOT / "grafana" / "rules").glob("*.yml"))


def test_the_capability_advice_grants_cap_net_raw_to_pktagent_alone(tmp_path: Path) -> None:
    """The README's setpriv line, run for user nobody: the agent captures, with CAP_NET_RAW as its only capability."""
    need_root()
    need_tool("setpriv")
    command = readme_block("start pktagent alone with the capability", "sh").strip()
    assert "setcap" not in command
    argv = command.replace("$(id -u)", "65534").replace("$(id -g)", "65534").split()  # as user nobody would run it
    assert argv[:2] == ["sudo", "setpriv"] and argv[-2:] == [".venv/bin/pktagent", "run"]
    flags = argv[2:-2]
    port = free_port()
    log = tmp_path / "agent.log"
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["setpriv", *flags, *PKTAGENT, "run", "-i", "lo", "--web.listen-address", f"127.0.0.1:{port}", "--state-dir", str(state)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd="/",
        )
    try:
        import urllib.request

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as r:
                    return r.status == 200
            except OSError:
                return False

        until(lambda: proc.poll() is not None or up(), "the agent to capture as nobody", timeout=30)
        assert proc.poll() is None, log.read_text()
        status = dict(line.split(":\t", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if ":\t" in line)
        assert status["Uid"].split()[0] == "65534"
        assert int(status["CapEff"], 16) == 1 << 13  # CAP_NET_RAW, and nothing else
    finally:
        proc.terminate()
        proc.wait(10)


def _hash_hint_commands() -> list[str]:
    from agent.export import web

    return re.findall(r"`([^`]+)`", web.HASH_HINT)


def test_the_bcrypt_hint_of_the_venv_python_makes_a_hash_the_agent_accepts(tmp_path: Path) -> None:
    (_, python) = _hash_hint_commands()
    assert python.startswith(sys.executable + " -c ")
    code = python.split(" -c ", 1)[1].strip("'")
    # No terminal: getpass reads the password from stdin (and warns about echo on stderr).
    done = subprocess.run([sys.executable, "-c", code], input="s3cret\n", capture_output=True, text=True, timeout=60, start_new_session=True)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip()
    assert bcrypt.checkpw(b"s3cret", hashed.encode())
    _accepted_by_check_config(tmp_path, hashed)


def test_the_bcrypt_hint_of_htpasswd_makes_a_hash_the_agent_accepts(tmp_path: Path) -> None:
    need_tool("htpasswd")
    (htpasswd, _) = _hash_hint_commands()
    assert htpasswd == "htpasswd -nBC 12 USER"
    # -b: the password from the command line instead of a prompt; the rest as the hint says.
    done = subprocess.run(["htpasswd", "-nbBC", "12", "prometheus", "s3cret"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    hashed = done.stdout.strip().split(":", 1)[1]
    assert hashed.startswith("$2y$12$")
    _accepted_by_check_config(tmp_path, hashed)


def _accepted_by_check_config(tmp_path: Path, hashed: str) -> None:
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    config = tmp_path / "c.yml"
    config.write_text(f"web:\n  config_file: {web}\n")
    done = pktagent("check-config", str(config))
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.parametrize("hint_in", ["readme", "error"])
def test_no_advice_to_setcap_the_interpreter(hint_in: str) -> None:
    from agent.capture.live import PERMISSION_HINT

    text = README if hint_in == "readme" else PERMISSION_HINT
    assert "setcap cap_net_raw+ep $(readlink -f .venv/bin/python3)" not in text
    assert "--ambient-caps=+net_raw" in text
