"""Started as root with ``user:``: nothing in the state directory is followed, and no process keeps more than CAP_NET_RAW.

The state directory belongs to the service user, who plants links in it to a root-owned file;
the agent (two workers) must leave the file as it was. Every process of the agent, the workers
included, must show ``NoNewPrivs: 1`` and a bounding set of CAP_NET_RAW alone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from liveagent import BIN, PORT, children, live_agent
from netns import VethPair

pytestmark = pytest.mark.live

CAP_NET_RAW = 1 << 13
SECRET = b"root:$6$not-for-nobody:19000:0:99999:7:::\n"


@pytest.fixture
def home() -> Iterator[Path]:
    """A directory the service user can reach (pytest's tmp_path is root's alone), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"pktagent-sec-{os.getpid()}-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_nobody(*cmd: str) -> None:
    nobody = pwd.getpwnam("nobody")
    subprocess.run(cmd, check=True, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[])


def status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())


def test_links_planted_in_the_state_dir_are_not_followed_and_every_process_is_bounded(veth: VethPair, home: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    secret = home / "shadow"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    state = home / "state"
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    # The service user's own links: to the secret, under a name of the agent's own database, and a dangling one.
    for name in ("x", "devices.db", "devices.db-wal"):
        as_nobody("ln", "-s", str(secret), str(state / name))
    as_nobody("ln", "-s", str(home / "made-by-root"), str(state / "y"))
    conf = home / "pktagent.yml"
    conf.write_text(f"user: nobody\nstate_dir: {state}\n")
    with live_agent(veth, home, "--config", str(conf), "--workers", "2") as a:
        pids = [a.pid, *children(a.pid)]
        assert len(pids) == 3, pids  # the agent and its two workers
        for pid in pids:
            s = status(pid)
            assert s["Uid"].split()[:2] == [str(nobody.pw_uid)] * 2, pid
            assert s["NoNewPrivs"].strip() == "1", pid
            assert int(s["CapBnd"], 16) == CAP_NET_RAW, (pid, s["CapBnd"])
            assert (int(s["CapEff"], 16), int(s["CapPrm"], 16), int(s["CapInh"], 16), int(s["CapAmb"], 16)) == (CAP_NET_RAW, CAP_NET_RAW, 0, 0), pid
        a.stop()
    st = secret.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o600)
    assert secret.read_bytes() == SECRET
    assert not (home / "made-by-root").exists()
    assert (state / "x").is_symlink() and (state / "y").is_symlink()


def test_a_state_dir_owned_by_another_user_is_refused(veth: VethPair, home: Path) -> None:
    state = home / "state"
    state.mkdir()
    os.chown(state, 4242, 4242)  # neither root nor the service user: its owner could plant anything in it
    conf = home / "pktagent.yml"
    conf.write_text(f"user: nobody\nstate_dir: {state}\n")
    cmd = [str(BIN / "pktagent"), "run", "-i", veth.rx, "--listen", f"127.0.0.1:{PORT}", "--config", str(conf)]
    done = subprocess.run(veth.in_receiver(*cmd), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"pktagent: ConfigError: config key state_dir: {state} is owned by uid 4242, not by root or nobody: `chown nobody {state}` or name another directory"
    )
    assert "Traceback" not in done.stderr
    assert state.stat().st_uid == 4242
