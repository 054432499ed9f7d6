"""Crash at any phase: `launch` is SIGKILLed at each point, and nothing is lost.

Seven points are product crash points (`orchestrate.core.flows.crashpoints`, named by
ORCHESTRATE_CRASH_AT: the process kills itself with SIGKILL there); "during-create" is a
SIGKILL from outside while the fake cloud holds the insert operation pending. After each
kill: `status` shows the instance as it really is, a new `launch` converges on the same
instance (one insert in all), and `down` leaves no instance in the fake API, no row in
state and no background tunnel.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from orchestrate.core.flows.crashpoints import ENV, POINTS

from tests.reliability.support import (
    assert_all_gone,
    http_status,
    inserts,
    launch_args,
    notebook_answers,
    orchestrate,
    precreate_firewall,
    slow_step_plugin,
    status_json,
    tunnel_processes,
    wait_for,
)
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]

#: point -> what `status` must say right after the crash (None: no instance yet).
EXPECTED = {
    "after-intent": None,
    "during-create": "pending",
    "after-create-call": "running",
    "after-create": "running",
    "after-host-key": "running",
    "in-host-step": "running",
    "after-setup": "running",
    "tunnel-started": "running",
}


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


def test_every_crash_point_is_tested() -> None:
    assert set(POINTS) | {"during-create"} == set(EXPECTED)


@pytest.mark.parametrize("point", list(EXPECTED))
def test_crash_then_status_relaunch_and_down(
    bed: Bed, point: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stack: ExitStack
) -> None:
    slow = None
    if point == "in-host-step":
        # A host step that sleeps, so the kill lands while it runs on the host.
        slow = stack.enter_context(slow_step_plugin(monkeypatch, tmp_path / "plugin", seconds=2))
    if point == "during-create":
        # The insert stays PENDING for a few seconds: the kill lands while launch polls it,
        # and status still finds it booting.
        precreate_firewall(bed)
        bed.gce.faults.operation_latency = 5
        proc = orchestrate(bed, *launch_args())
        wait_for("the insert request", lambda: bed.gce.calls("POST", "/instances"), every=0.01)
        proc.send_signal(signal.SIGKILL)
    else:
        proc = orchestrate(bed, *launch_args(), env={ENV: point})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err
    if slow is not None:
        # The step began on the host as the launch died. Its output reaches the dead
        # connection through the stage's line tagger, which the first failed write ends; the
        # step itself may still finish (it is idempotent, as every step must be).
        wait_for("the step to have started on the host", lambda: slow.starts == 1, timeout=10)

    info = status_json(bed, "nb")
    assert len(info) == 1, info
    if EXPECTED[point] is None:
        assert bed.gce.instances == {}
        assert info[0]["status"] == "creating"
    else:
        assert list(bed.gce.instances) == ["nb"]
        truth = {EXPECTED[point]}
        if bed.gce.instances["nb"]["status"] == "RUNNING":
            truth.add("running")  # a slow machine: the insert finished while status ran
        assert info[0]["status"] in truth, info
        assert info[0]["zone"] == "us-east1-d"
        assert info[0]["address"] == "127.0.0.1"
    if point in ("after-intent", "during-create", "after-create-call"):
        assert any("launch did not finish" in note for note in info[0]["notes"]), info
    tunnel = info[0]["tunnel"]
    assert tunnel.startswith("localhost:") if point == "tunnel-started" else tunnel == "none"

    bed.gce.faults.operation_latency = 0
    relaunch = bed.cli(*launch_args())
    notebook_answers(relaunch.stdout)
    assert inserts(bed) == 1, "a second instance was created"
    if slow is not None:
        # Done in the end: by the relaunch (run again), or by the orphan run it then found
        # done (not run again).
        assert slow.done and slow.starts in (1, 2), slow.starts

    bed.cli("down", "nb", "--yes")
    assert_all_gone(bed)


@pytest.mark.parametrize("point", ["after-host-key", "after-setup"])
def test_a_relaunch_killed_after_starting_its_tunnel_early_leaves_it_to_status_and_down(
    bed: Bed, point: str
) -> None:
    """A relaunch `--detach` of a host set up before starts the background tunnel before it
    connects. Killed after that, it leaves the tunnel serving on its own, as a
    detached tunnel was asked for: `status` shows it, a new launch replaces it (one tunnel,
    not two), and `down` ends it."""
    notebook_answers(bed.cli(*launch_args()).stdout)
    assert len(tunnel_processes(bed)) == 1

    proc = orchestrate(bed, *launch_args(), env={ENV: point})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err

    def shown() -> str:
        return str(status_json(bed, "nb")[0]["tunnel"])

    port = wait_for("the tunnel in status", lambda: shown().removeprefix("localhost:").isdigit())
    assert port and len(tunnel_processes(bed)) == 1, "the old tunnel was replaced"
    assert http_status(int(shown().removeprefix("localhost:")), "/api/status") in (200, 403)

    notebook_answers(bed.cli(*launch_args()).stdout)
    assert len(tunnel_processes(bed)) == 1
    assert inserts(bed) == 1
    bed.cli("down", "nb", "--yes")
    assert_all_gone(bed)
