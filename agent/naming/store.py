"""The device store: the registry kept in SQLite, in the state directory, so names survive restarts.

WAL mode, a versioned schema (``PRAGMA user_version``) with migrations applied in order.
Writes never happen on the packet path: ``StoreWriter`` takes the registry's changes every few
seconds in its own thread and writes them in one transaction; if the database is locked or slow
the changes wait for the next round and the failure is counted — capture never waits for it.
A file that is corrupt or unreadable is moved aside with a warning and a fresh one started.
"""

from __future__ import annotations

import logging
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
            self.conn = self._open()
        except sqlite3.DatabaseError as e:
            self.recovered = self._move_aside(str(e))
            self.conn = self._open()

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self.path, self.timeout_ms)
        try:
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            conn.execute("PRAGMA journal_mode = WAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this pktagent knows ({len(MIGRATIONS)})")
            for number, steps in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.execute("BEGIN")
                for step in steps:
                    conn.execute(step)
                conn.execute(f"PRAGMA user_version = {number}")
                conn.execute("COMMIT")
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _move_aside(self, reason: str) -> str:
        aside = self.path.with_name(f"{FILENAME}.damaged-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        log.warning("device database %s could not be used (%s): moved it to %s and started a fresh one", self.path, reason, aside)
        return str(aside)

    def load(self) -> list[Device]:
        return _load(self.conn)

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
            c.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.conn.close()


def _load(conn: sqlite3.Connection) -> list[Device]:
    devices: dict[int, Device] = {}
    for row in conn.execute("SELECT id, first_seen, last_seen, client_id, vendor_class, linked_to FROM devices"):
        devices[row[0]] = Device(row[0], first_seen=row[1], last_seen=row[2], client_id=row[3], vendor_class=row[4], linked_to=row[5])
    for mac, device_id in conn.execute("SELECT mac, device_id FROM macs"):
        devices[device_id].macs.add(mac)
    for address, device_id, seen in conn.execute("SELECT address, device_id, last_seen FROM addresses"):
        devices[device_id].addresses[address] = seen
    for device_id, source, name in conn.execute("SELECT device_id, source, name FROM names"):
        devices[device_id].names[source] = name
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
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read the device database {path}: {e}") from None


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
            log.warning("could not write the device database %s (%s); will retry", self.store.path, e)
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
