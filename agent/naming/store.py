"""The device store: the registry kept in SQLite, in the state directory, so names survive restarts.

WAL mode, a versioned schema (``PRAGMA user_version``) with migrations applied in order.
Writes never happen on the packet path: ``StoreWriter`` takes the registry's changes every few
seconds in its own thread and writes them in one transaction; if the database is locked or slow
the changes wait for the next round and the failure is counted — capture never waits for it.
A file that is corrupt, or whose contents do not add up (a row of a device that is not there, a
table without its columns), is moved aside with a warning and a fresh one started; a file that
cannot be used for another reason (a full disk, no permission) is left as it is and the agent
runs without it, so a passing fault never costs the devices learned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from agent.errors import StoreError
from agent.naming.registry import Device, Registry

log = logging.getLogger("pktagent.store")

FILENAME = "devices.db"
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # version 1
        "CREATE TABLE devices (id INTEGER PRIMARY KEY, first_seen REAL NOT NULL, last_seen REAL NOT NULL,"
        " client_id TEXT, vendor_class TEXT, linked_to INTEGER)",
        "CREATE TABLE macs (mac TEXT PRIMARY KEY, device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE)",
        "CREATE TABLE addresses (address TEXT NOT NULL, device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,"
        " last_seen REAL NOT NULL, PRIMARY KEY (address, device_id))",
        "CREATE TABLE names (device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE, source TEXT NOT NULL,"
        " name TEXT NOT NULL, PRIMARY KEY (device_id, source))",
        "CREATE INDEX addresses_by_device ON addresses(device_id)",
    ),
)


SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26


class Damaged(sqlite3.DatabaseError):
    """The file is a database, but not one of ours in a state we can use: move it aside."""


def is_damage(e: sqlite3.Error) -> bool:
    """Whether an error says the file itself is bad (only then may it be moved aside), not the disk or the permissions."""
    code = getattr(e, "sqlite_errorcode", None)
    return isinstance(e, Damaged) or (code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB))


def describe(e: sqlite3.Error, directory: str | Path | None = None) -> str:
    """The error as the log should say it: a full disk as "disk full" (SQLite may say only "disk I/O error")."""
    code = getattr(e, "sqlite_errorcode", None)
    full = code is not None and code & 0xFF == SQLITE_FULL
    if not full and code is not None and code & 0xFF == SQLITE_IOERR and directory is not None:
        with contextlib.suppress(OSError):
            full = os.statvfs(directory).f_bavail == 0
    return f"disk full ({e})" if full else str(e)


def _connect(path: Path, timeout_ms: int, read_only: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if read_only else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_ms / 1000, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class Store:
    """One SQLite file of devices.

    >>> # store = Store(Path("/var/lib/pktagent")); registry.restore(store.load())
    """

    def __init__(self, state_dir: str | Path, *, timeout_ms: int = 200) -> None:
        self.path = Path(state_dir) / FILENAME
        self.timeout_ms = timeout_ms
        self.recovered: str | None = None  # where a damaged file was moved, if one was
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn, self._devices = self._open()
        except sqlite3.Error as e:
            if not is_damage(e):
                raise  # the disk or the permissions, not the file: leave it for the next start
            self.recovered = self._move_aside(str(e))
            self.conn, self._devices = self._open()

    def _open(self) -> tuple[sqlite3.Connection, list[Device]]:
        conn = _connect(self.path, self.timeout_ms)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise Damaged("integrity check failed")
            conn.execute("PRAGMA journal_mode = WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise Damaged(f"schema version {version} is newer than this pktagent knows ({len(MIGRATIONS)})")
            for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.execute("BEGIN")
                for step in steps:
                    conn.execute(step)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
            devices = _load(conn)  # what quick_check does not see: rows that do not add up, wrong columns
        except sqlite3.Error:
            conn.close()
            raise
        return conn, devices

    def _move_aside(self, reason: str) -> str:
        aside = self.path.with_name(f"{FILENAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        log.warning("device database %s could not be used (%s): moved it to %s and started a fresh one", self.path, reason, aside)
        return str(aside)

    def load(self) -> list[Device]:
        """The devices the file held when it was opened (read and checked then)."""
        return self._devices

    def write(self, changed: Iterable[Device], removed: Iterable[int]) -> None:
        """Write changed devices and delete removed ones, in one transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for device_id in removed:
                c.execute("DELETE FROM devices WHERE id = ?", (device_id,))
            for d in changed:
                c.execute(
                    "INSERT OR REPLACE INTO devices (id, first_seen, last_seen, client_id, vendor_class, linked_to) VALUES (?, ?, ?, ?, ?, ?)",
                    (d.id, d.first_seen, d.last_seen, d.client_id, d.vendor_class, d.linked_to),
                )
                for table in ("macs", "addresses", "names"):
                    c.execute(f"DELETE FROM {table} WHERE device_id = ?", (d.id,))
                c.executemany("INSERT OR REPLACE INTO macs (mac, device_id) VALUES (?, ?)", [(m, d.id) for m in d.macs])
                c.executemany("INSERT INTO addresses (address, device_id, last_seen) VALUES (?, ?, ?)", [(a, d.id, t) for a, t in d.addresses.items()])
                c.executemany("INSERT INTO names (device_id, source, name) VALUES (?, ?, ?)", [(d.id, s, n) for s, n in d.names.items()])
            c.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself on some errors (a full disk); a second ROLLBACK would
            # fail with "cannot rollback" and hide the error that matters.
            if c.in_transaction:
                try:
                    c.execute("ROLLBACK")
                except sqlite3.Error as e:
                    log.debug("rollback after a failed write: %s", e)
            raise

    def close(self) -> None:
        self.conn.close()


def _load(conn: sqlite3.Connection) -> list[Device]:
    """Every device, or ``Damaged`` when the contents do not add up."""
    devices: dict[int, Device] = {}

    def owner(table: str, device_id: object) -> Device:
        d = devices.get(device_id) if isinstance(device_id, int) else None
        if d is None:
            raise Damaged(f"inconsistent: a row of {table} belongs to device {device_id!r}, which is not there")
        return d

    try:
        for row in conn.execute("SELECT id, first_seen, last_seen, client_id, vendor_class, linked_to FROM devices"):
            if not isinstance(row[0], int) or not all(isinstance(t, (int, float)) for t in row[1:3]):
                raise Damaged(f"inconsistent: device row {row[:3]!r} has the wrong types")
            devices[row[0]] = Device(row[0], first_seen=float(row[1]), last_seen=float(row[2]), client_id=row[3], vendor_class=row[4], linked_to=row[5])
        for mac, device_id in conn.execute("SELECT mac, device_id FROM macs"):
            owner("macs", device_id).macs.add(str(mac))
        for address, device_id, seen in conn.execute("SELECT address, device_id, last_seen FROM addresses"):
            owner("addresses", device_id).addresses[str(address)] = float(seen)
        for device_id, source, name in conn.execute("SELECT device_id, source, name FROM names"):
            owner("names", device_id).names[str(source)] = str(name)
    except sqlite3.OperationalError as e:
        if "no such" not in str(e):  # "no such column", "no such table": not the schema we wrote
            raise
        raise Damaged(f"inconsistent: {e}") from None
    except (TypeError, ValueError) as e:
        raise Damaged(f"inconsistent: {e}") from None
    return sorted(devices.values(), key=lambda d: d.id)


def read_devices(state_dir: str | Path) -> list[Device]:
    """The devices a (possibly running) agent keeps, read without writing anything."""
    path = Path(state_dir) / FILENAME
    if not path.exists():
        return []
    try:
        conn = _connect(path, 2000, read_only=True)
        try:
            return _load(conn)
        finally:
            conn.close()
    except Damaged as e:
        raise StoreError(f"the device database {path} is damaged ({e}): the agent moves it aside at its next start") from None
    except sqlite3.Error as e:
        raise StoreError(f"cannot read the device database {path}: {describe(e)}") from None


class StoreWriter:
    """Writes the registry's changes to the store every ``interval`` seconds, in its own thread."""

    def __init__(self, registry: Registry, store: Store, interval: float = 5.0) -> None:
        self.registry, self.store, self.interval = registry, store, interval
        self.writes = {"ok": 0, "error": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def flush(self) -> bool:
        changed, removed = self.registry.take_changes()
        if not changed and not removed:
            return True
        try:
            self.store.write(changed, removed)
        except sqlite3.Error as e:
            # Locked, busy or failing: keep the changes for the next round; capture goes on.
            with self.registry.lock:
                self.registry.dirty.update(d.id for d in changed if d.id in self.registry.devices)
                self.registry.removed.update(removed)
            self.writes["error"] += 1
            log.warning("could not write the device database %s (%s); will retry", self.store.path, describe(e, self.store.path.parent))
            return False
        self.writes["ok"] += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.flush()
        self.store.close()
