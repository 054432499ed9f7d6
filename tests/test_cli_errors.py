"""Damaged inputs and a busy database give one line (what, where, how to fix) and a
non-zero exit, never a traceback; `--debug` after the command is that command's unknown
option, not a request for tracebacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from orchestrate.core.api.errors import StateError
from orchestrate.core.store.paths import state_db
from orchestrate.core.store.state import State, open_state


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_a_profile_that_is_not_utf8_names_its_file_and_line(cli) -> None:
    Path("orchestrate.toml").write_bytes(b'[profiles.a]\nimage = "caf\xe9"\n')
    result = cli("profiles", "a")
    assert result.code == 2
    line = one_line(result.err)
    assert line.endswith("orchestrate.toml:2: not UTF-8 text (byte 0xe9) (TOML files are "
                         "UTF-8: save it as UTF-8)"), line  # fmt: skip


def test_a_damaged_row_names_the_row_and_the_fix(cli) -> None:
    open_state().close()
    db = sqlite3.connect(state_db())
    db.execute(
        "INSERT INTO instances (name, provider, status, profile_json, extra_json, created_at,"
        " updated_at) VALUES ('bad', 'gcp', 'running', '{not json', '{}', 0, 0)"
    )
    db.commit()
    db.close()
    result = cli("status", "--offline")
    assert result.code == 1
    line = one_line(result.err)
    assert "the state row 'bad'" in line and "is damaged" in line
    assert "DELETE FROM instances WHERE name = 'bad'" in line


def test_a_database_held_by_another_writer_is_one_error(orch_home: Path) -> None:
    open_state().close()
    holder = sqlite3.connect(state_db(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        state = State(state_db(), timeout_s=0.2)
        with pytest.raises(StateError, match="is busy") as caught:
            state.event("nb", "note", "written while another writer holds the lock")
        assert "another orchestrate command holds it" in caught.value.line()
        state.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_debug_after_the_command_is_an_unknown_option_not_a_traceback(cli) -> None:
    result = cli("plugins", "--debug")
    assert result.code == 2
    line = one_line(result.err)  # click words it "No such option: --debug" or "... '--debug'."
    assert "No such option" in line and "--debug" in line, line
