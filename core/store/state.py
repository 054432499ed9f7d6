"""The local state store: one SQLite row per instance and an event log.

Why SQLite: several orchestrate processes (a launch, a detached tunnel, a status) touch the
same instances at once; WAL plus a busy timeout lets them without "database is locked".
The launch writes its row *before* any cloud call (intent first), so a crash at any point
leaves a row that `status` shows and `down` can clean: no instance bills unseen.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import StateError
from orchestrate.core.api.retry import Retry
from orchestrate.core.store.profiles import Profile

# Each entry upgrades the schema by one version; never edit an entry once released.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        zone TEXT,
        cloud_id TEXT,
        status TEXT NOT NULL,
        address TEXT,
        ssh_user TEXT,
        ssh_port INTEGER NOT NULL DEFAULT 22,
        host_key TEXT,
        profile_json TEXT NOT NULL DEFAULT '{}',
        setup_hash TEXT,
        token TEXT,
        local_port INTEGER,
        tunnel_pid INTEGER,
        extra_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        instance TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data_json TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_instance ON events(instance, id);
    """,
    # Cluster nodes: every node is a row; `cluster` names its cluster (NULL for a lone
    # instance), `node_index` is 0 for the head (whose row carries the cluster's name).
    """
    ALTER TABLE instances ADD COLUMN cluster TEXT;
    ALTER TABLE instances ADD COLUMN node_index INTEGER;
    CREATE INDEX instances_cluster ON instances(cluster, node_index);
    """,
)

COLUMNS = (
    "name", "provider", "zone", "cloud_id", "status", "address", "ssh_user", "ssh_port",
    "host_key", "profile_json", "setup_hash", "token", "local_port", "tunnel_pid",
    "extra_json", "created_at", "updated_at", "started_at", "cluster", "node_index",
)  # fmt: skip


@dataclass
class InstanceRow:
    """One instance as orchestrate knows it locally."""

    name: str
    provider: str
    status: str
    zone: str | None = None
    cloud_id: str | None = None
    address: str | None = None
    ssh_user: str | None = None
    ssh_port: int = 22
    host_key: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)
    setup_hash: str | None = None
    token: str | None = None
    local_port: int | None = None
    tunnel_pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    started_at: float | None = None
    #: the cluster this row is a node of (its head's name), None for a lone instance
    cluster: str | None = None
    #: 0 for a cluster's head, 1.. for its workers; None for a lone instance
    node_index: int | None = None

    @property
    def is_worker(self) -> bool:
        """A cluster node other than the head: commands take the cluster's name instead."""
        return self.cluster is not None and bool(self.node_index)

    def launched_profile(self) -> Profile:
        """The profile this row was launched with, typed and with defaults filled.

        The row keeps the snapshot as plain JSON; every reader (core, and plugins that get
        the row from a hook) goes through here instead of digging in the dict.
        """
        return Profile.from_snapshot(self.profile)


@dataclass(frozen=True)
class Event:
    ts: float
    instance: str
    kind: str
    message: str
    data: dict[str, Any]


def _row(values: sqlite3.Row, path: Path) -> InstanceRow:
    data = dict(values)
    name = data.get("name")
    try:
        profile = json.loads(data.pop("profile_json") or "{}")
        extra = json.loads(data.pop("extra_json") or "{}")
        if not isinstance(profile, dict) or not isinstance(extra, dict):
            raise ValueError("profile or extra is not a JSON object")
        return InstanceRow(profile=profile, extra=extra, **data)
    except (ValueError, TypeError) as exc:
        raise StateError(
            f"the state row {name!r} in {path} is damaged ({exc})",
            hint="it was changed outside orchestrate: restore the file, or delete the row "
            f"with sqlite3 (DELETE FROM instances WHERE name = '{name}')",
        ) from exc


class State:
    """A connection to the state database; cheap to open, one per command."""

    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            new = not path.exists()
            self._db = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None)
            if new:
                # Tokens and pinned host keys live here: the user alone may read it.
                os.chmod(path, 0o600)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._use_wal(timeout_s)
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StateError(
                f"cannot open the state database {path}: {exc}",
                hint="check the folder's permissions or set ORCHESTRATE_HOME",
            ) from exc

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue on the busy
        # timeout instead of one failing on lock upgrade.
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StateError(
                f"the state database {self.path} is busy: {exc}",
                hint="another orchestrate command holds it; wait for it to finish, or end it",
            ) from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _use_wal(self, timeout_s: float) -> None:
        """Put the database in WAL mode (kept in the file, so normally already done).

        Switching needs the database to itself, and SQLite answers a writer in the way with
        "database is locked" at once instead of waiting on the busy timeout: eight launches
        opening a new state together hit that. So the switch is retried within the same
        timeout.
        """
        if str(self._db.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        Retry(deadline_s=timeout_s, first_s=0.005, max_s=0.1).call(
            lambda: self._db.execute("PRAGMA journal_mode = WAL"),
            retry_if=lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e),
        )

    def _migrate(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise StateError(
                f"state database {self.path} is schema {version}, newer than this orchestrate",
                hint="upgrade orchestrate",
            )
        if version == len(MIGRATIONS):
            return
        with self._tx() as db:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            for index in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[index].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- instances -------------------------------------------------------------------------

    def record_intent(
        self, name: str, provider: str, profile: Mapping[str, Any], *, ssh_user: str | None
    ) -> InstanceRow:
        """Write the row for a new instance before any cloud call; keeps an existing row."""
        now = time.time()
        with self._tx() as db:
            existing = db.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO instances (name, provider, status, ssh_user, profile_json,"
                    " created_at, updated_at) VALUES (?, ?, 'creating', ?, ?, ?, ?)",
                    (name, provider, ssh_user, json.dumps(dict(profile)), now, now),
                )
                self._event(db, name, "intent", f"launch of {name} on {provider} begins", {})
        row = self.get(name)
        assert row is not None
        return row

    def update(self, name: str, **fields: Any) -> None:
        """Change some columns of one row; `profile` and `extra` take dicts."""
        if not fields:
            return
        if "profile" in fields:
            fields["profile_json"] = json.dumps(fields.pop("profile"))
        if "extra" in fields:
            fields["extra_json"] = json.dumps(fields.pop("extra"))
        bad = [key for key in fields if key not in COLUMNS]
        if bad:
            raise ValueError(f"unknown state columns: {bad}")
        fields["updated_at"] = time.time()
        assignments = ", ".join(f"{key} = ?" for key in fields)
        with self._tx() as db:
            db.execute(
                f"UPDATE instances SET {assignments} WHERE name = ?", (*fields.values(), name)
            )

    def get(self, name: str) -> InstanceRow | None:
        found = self._db.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
        return _row(found, self.path) if found is not None else None

    def all(self) -> list[InstanceRow]:
        return [
            _row(r, self.path) for r in self._db.execute("SELECT * FROM instances ORDER BY name")
        ]

    def nodes(self, cluster: str) -> list[InstanceRow]:
        """The rows of `cluster`, head first, then workers by index."""
        found = self._db.execute(
            "SELECT * FROM instances WHERE cluster = ? ORDER BY node_index, name", (cluster,)
        )
        return [_row(r, self.path) for r in found]

    def delete(self, name: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM instances WHERE name = ?", (name,))
            self._event(db, name, "forgotten", f"{name} removed from state", {})

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    def _event(
        db: sqlite3.Connection, name: str, kind: str, message: str, data: Mapping[str, Any]
    ) -> None:
        db.execute(
            "INSERT INTO events (ts, instance, kind, message, data_json) VALUES (?, ?, ?, ?, ?)",
            (time.time(), name, kind, message, json.dumps(dict(data))),
        )

    def event(
        self, name: str, kind: str, message: str, data: Mapping[str, Any] | None = None
    ) -> None:
        """Append to the event log. Callers pass no secrets: the log is shown verbatim."""
        with self._tx() as db:
            self._event(db, name, kind, message, data or {})

    def events(self, name: str | None = None, *, limit: int = 200) -> list[Event]:
        if name is None:
            rows = self._db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                "SELECT * FROM events WHERE instance = ? ORDER BY id DESC LIMIT ?", (name, limit)
            )
        found = [
            Event(r["ts"], r["instance"], r["kind"], r["message"], json.loads(r["data_json"]))
            for r in rows
        ]
        found.reverse()
        return found


def open_state() -> State:
    """The user's state database, created on first use."""
    from orchestrate.core.store.paths import state_db

    return State(state_db())
