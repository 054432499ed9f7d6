"""The row's record of a tunnel held in the foreground: alive while its process holds it,
gone however that process ends.

A real child process holds the record (as `orchestrate tunnel NAME` does) and is ended the
three ways a user's is: SIGTERM, SIGHUP (the terminal closed), SIGKILL (a crash). The end
to end version, with a real tunnel, runs on the bed in tests/e2e/test_launch_gcp.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from orchestrate.core.flows.background import is_foreground_tunnel, tunnel_kind
from orchestrate.core.store.paths import state_db
from orchestrate.core.store.state import State

HOLDER = textwrap.dedent(
    """
    import sys, time
    from orchestrate.core.flows.background import held_in_foreground
    from orchestrate.core.store.paths import state_db
    from orchestrate.core.store.state import State

    state = State(state_db())
    try:
        with held_in_foreground(state, "nb", 8899):
            print("held", flush=True)
            time.sleep(60)
    except KeyboardInterrupt:
        print("ended", flush=True)
    """
)


@pytest.fixture
def state(orch_home: Path) -> State:
    made = State(state_db())
    made.record_intent("nb", "gcp", {}, ssh_user="u")
    return made


def _hold() -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGHUP])
def test_a_foreground_tunnel_is_in_the_row_until_its_process_is_told_to_end(
    state: State, ending: signal.Signals
) -> None:
    child = _hold()
    try:
        row = state.get("nb")
        assert row is not None
        assert (row.tunnel_pid, row.local_port) == (child.pid, 8899)
        assert tunnel_kind(row) == "foreground"
        child.send_signal(ending)
        out, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert out.strip() == "ended", "it ended as Ctrl-C does, through the finally blocks"
    row = state.get("nb")
    assert row is not None and row.tunnel_pid is None and tunnel_kind(row) is None
    assert list((state_db().parent / "tunnels").iterdir()) == []


def test_a_killed_holder_reads_as_no_tunnel(state: State) -> None:
    child = _hold()
    child.kill()
    child.wait()
    row = state.get("nb")
    assert row is not None and row.tunnel_pid == child.pid, "nothing ran to clear the row"
    assert tunnel_kind(row) is None, "the lock went with the process"
    assert not is_foreground_tunnel(row.tunnel_pid, "nb")
    assert list((state_db().parent / "tunnels").iterdir()) == [], "the stale file is swept"


def test_a_live_pid_that_holds_nothing_is_no_tunnel(state: State) -> None:
    """A recycled pid: alive, but not holding this instance's tunnel."""
    state.update("nb", tunnel_pid=os.getpid(), local_port=8899)
    row = state.get("nb")
    assert row is not None and tunnel_kind(row) is None
