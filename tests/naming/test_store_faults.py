"""The device database under faults: contents that do not add up are moved aside; a full disk never costs a healthy file."""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need_root

from agent.config import Config
from agent.naming.registry import Device, Registry
from agent.naming.store import Store, StoreWriter, read_devices

BIN = Path(sys.executable).parent
TV = Device(1, {"00:11:22:33:44:20"}, {"192.168.1.20": 1.0}, {"dhcp": "living-room-tv"}, 1.0, 2.0)
PI = Device(2, {"b8:27:eb:00:00:30"}, {"192.168.1.30": 1.0}, {"mdns": "pi-kitchen"}, 1.0, 3.0)
_mounts = itertools.count()


def healthy(state: Path) -> None:
    store = Store(state)
    store.write([TV, PI], [])
    store.close()


def fiddle(state: Path, statement: str) -> None:
    """Change the file behind the agent's back, as a bad restore or another tool might (foreign keys off)."""
    conn = sqlite3.connect(state / "devices.db", isolation_level=None)
    conn.execute(statement)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # SQLite sees nothing wrong
    conn.close()


@pytest.mark.parametrize(
    ("statement", "reason"),
    [
        ("INSERT INTO macs (mac, device_id) VALUES ('02:00:00:00:00:99', 99)", "a row of macs belongs to device 99, which is not there"),
        ("INSERT INTO names (device_id, source, name) VALUES (7, 'dns', 'ghost')", "a row of names belongs to device 7, which is not there"),
        ("ALTER TABLE devices RENAME COLUMN client_id TO cid", "no such column: client_id"),
        ("UPDATE devices SET last_seen = 'yesterday' WHERE id = 2", "has the wrong types"),
    ],
)
def test_an_inconsistent_database_is_moved_aside_at_start_and_reported_by_devices(tmp_path: Path, statement: str, reason: str) -> None:
    state = tmp_path / "state"
    healthy(state)
    fiddle(state, statement)
    listed = subprocess.run([str(BIN / "pktagent"), "devices", "--state-dir", str(state)], capture_output=True, text=True)
    assert listed.returncode == 1
    assert listed.stderr.startswith(f"pktagent: StoreError: the device database {state / 'devices.db'} is damaged (inconsistent: ")
    assert reason in listed.stderr and listed.stderr.count("\n") == 1 and "Traceback" not in listed.stderr
    store = Store(state)  # what `pktagent run` does at start
    try:
        assert store.recovered is not None and Path(store.recovered).exists()
        assert store.load() == []
    finally:
        store.close()
    assert read_devices(state) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of our own, to fill up."""
    need_root()
    where = Path(f"/tmp/pktagent-http-{os.getpid()}-{next(_mounts)}")
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)  # lazy: a failed test may still hold a file open
        where.rmdir()


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, bytes(4096))
    except OSError as e:
        assert e.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_at_start_leaves_a_healthy_database_alone(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.runtime.agent import open_store

    state = small_disk / "state"
    healthy(state)
    before = sorted(os.listdir(state))
    filler = fill(small_disk)
    with caplog.at_level(logging.WARNING):
        assert open_store(Config(state_dir=str(state))) is None  # runs without it, this time
    assert not any("damaged" in name for name in os.listdir(state)), os.listdir(state)
    assert "disk full" in caplog.text and "moved it" not in caplog.text
    filler.unlink()
    writer = open_store(Config(state_dir=str(state)))
    try:
        assert writer is not None and writer.store.recovered is None
        assert [d.names for d in writer.store.load()] == [TV.names, PI.names]  # nothing lost
    finally:
        writer.store.close()
    assert set(before) <= set(os.listdir(state))


def test_a_write_on_a_full_disk_is_logged_as_disk_full_and_retried(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = small_disk / "state"
    registry = Registry(max_devices=100)
    writer = StoreWriter(registry, Store(state))
    filler = fill(small_disk)
    with registry.lock:
        for i in range(1, 40):  # more than the few pages left can hold
            registry.devices[i] = Device(i, {f"02:00:00:00:00:{i:02x}"}, {f"10.0.0.{i}": 1.0}, {"dhcp": f"host-{i}-" + "x" * 4000}, 1.0, 1.0)
            registry.dirty.add(i)
    try:
        with caplog.at_level(logging.DEBUG, logger="pktagent.store"):
            assert writer.flush() is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "disk full" in warnings[0], warnings
        assert "cannot rollback" not in warnings[0]
        assert writer.writes == {"ok": 0, "error": 1}
        filler.unlink()
        assert writer.flush() is True  # the changes were kept back for the next round
    finally:
        writer.stop()
    assert len(read_devices(state)) == 39
