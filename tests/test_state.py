"""The state store: schema, intent rows, events, permissions, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from orchestrate.core.api.errors import StateError
from orchestrate.core.store.state import MIGRATIONS, State


def test_new_database_is_private_wal_and_current(tmp_path: Path) -> None:
    path = tmp_path / "s" / "state.db"
    with State(path) as state:
        assert state.schema_version() == len(MIGRATIONS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_opening_waits_for_a_writer_in_the_way_of_the_wal_switch(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once, without its busy timeout, while another
    connection holds the write lock of a database still in rollback mode (what two
    processes creating the state together can meet). Opening must wait, not fail."""
    import threading

    path = tmp_path / "state.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE busy (x)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO busy VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        with State(path, timeout_s=10) as state:
            assert state.schema_version() == len(MIGRATIONS)
    finally:
        release.join()
        other.close()
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_intent_row_first_then_updates_and_events(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as state:
        row = state.record_intent("nb", "gcp", {"image": "x"}, ssh_user="u")
        assert row.status == "creating" and row.cloud_id is None
        assert row.profile == {"image": "x"}
        state.update("nb", status="running", address="127.0.0.1", extra={"fw": "r"})
        again = state.record_intent("nb", "gcp", {"image": "other"}, ssh_user="u")
        assert again.status == "running" and again.profile == {"image": "x"}
        assert again.extra == {"fw": "r"}
        state.event("nb", "created", "created in z1", {"zone": "z1"})
        kinds = [e.kind for e in state.events("nb")]
        assert kinds == ["intent", "created"]
        state.delete("nb")
        assert state.get("nb") is None and state.all() == []
        assert state.events("nb")[-1].kind == "forgotten"


def test_unknown_column_is_refused(tmp_path: Path) -> None:
    with State(tmp_path / "state.db") as state:
        state.record_intent("nb", "gcp", {}, ssh_user=None)
        with pytest.raises(ValueError, match="unknown state columns"):
            state.update("nb", colour="red")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this orchestrate"):
        State(path)


def _writer(path: str, index: int, count: int) -> None:
    with State(Path(path)) as state:
        name = f"nb-{index}"
        state.record_intent(name, "gcp", {}, ssh_user="u")
        for n in range(count):
            state.update(name, status="running", address=f"10.0.0.{n}")
            state.event(name, "tick", f"tick {n}")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    State(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), i, 40)) for i in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    with State(path) as state:
        assert len(state.all()) == 8
        for i in range(8):
            assert len([e for e in state.events(f"nb-{i}") if e.kind == "tick"]) == 40


def test_unwritable_folder_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot open the state database"):
        State(blocker / "state.db")
    assert os.path.exists(blocker)
