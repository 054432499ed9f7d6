"""Concurrent use: 8 orchestrate processes at once on different instances, twice.

Wave one: three `launch`es of new instances (each the whole workflow: create, host setup,
its own Jupyter container, a background tunnel), three `stop`s of running instances and two
`status` refreshes, all started together against the one fake API and the one state
database. Wave two: six `down`s and two `status`es together. After each wave: every process
succeeded, none saw "database is locked", no row was lost or duplicated, and each row agrees
with the fake cloud.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bed.docker_engine import docker
from tests.bed.sshd import free_port
from tests.reliability.support import (
    db_rows,
    in_process_plan,
    inserts,
    launch_args,
    notebook_answers,
    orchestrate,
    status_json,
    tunnel_processes,
)
from tests.support.e2e import Bed, trust_for

pytestmark = [pytest.mark.bed, pytest.mark.slow]

LAUNCHED = ["la", "lb", "lc"]
STOPPED = ["sa", "sb", "sc"]
GCE_STATUS = {"running": "RUNNING", "stopped": "TERMINATED"}


@pytest.fixture
def profiles(bed: Bed) -> Iterator[dict[str, str]]:
    """One profile per launched instance: its own container, host port and local port (on
    the bed all instances are this one machine, where real VMs would not collide)."""
    containers = {}
    profile = bed.work / "orchestrate.toml"
    text = profile.read_text()
    for name in LAUNCHED:
        containers[name] = f"{bed.container}-{name}"
        text += (
            f'\n[profiles.{name}]\nextends = "e2e"\ncontainer_name = "{containers[name]}"\n'
            f"remote_port = {free_port()}\nport = {free_port()}\n"
        )
    profile.write_text(text)
    trust_for(bed.home, profile)  # the user trusts the edited file again
    yield containers
    for container in containers.values():
        docker("rm", "-f", container, check=False)


def _create_without_setup(bed: Bed, names: list[str]) -> None:
    """Running instances for `stop` to act on: intent row and create through the product's
    own code and the real provider; no host setup is needed to stop them."""
    from orchestrate.core.cloud.instances import ensure_running
    from orchestrate.core.flows.launch import record_intent

    for name in names:
        runtime, plan = in_process_plan(bed, name)
        try:
            state = runtime.state()
            record_intent(state, plan)
            ensure_running(state, plan.provider, plan.spec, lambda message: None)
        finally:
            runtime.close()


def _run_together(bed: Bed, commands: list[list[str]]) -> list[tuple[list[str], int, str, str]]:
    procs = [(args, orchestrate(bed, *args)) for args in commands]
    results = []
    for args, proc in procs:
        out, err = proc.communicate(timeout=240)
        results.append((args, proc.returncode, out, err))
    return results


def _check(results: list[tuple[list[str], int, str, str]]) -> None:
    for args, code, _, err in results:
        assert "database is locked" not in err, (args, err)
        assert code == 0, (args, err)


def _consistent(bed: Bed, expected: dict[str, str]) -> None:
    """Rows and cloud agree with `expected` (name -> core status), one row per instance."""
    rows = db_rows(bed)
    assert sorted(r["name"] for r in rows) == sorted(expected)
    cloud = bed.gce.instances
    assert sorted(cloud) == sorted(expected)
    for row in rows:
        name = row["name"]
        assert row["status"] == expected[name], (name, row["status"])
        assert cloud[name]["status"] == GCE_STATUS[expected[name]], name
        assert row["cloud_id"] and row["cloud_id"].endswith(f"/instances/{name}"), row


def _logged(bed: Bed, kind: str) -> list[str]:
    """Instances with an event of `kind`, one entry per event: nothing lost, nothing twice."""
    return sorted(e["instance"] for e in db_rows(bed, "events") if e["kind"] == kind)


def test_eight_processes_at_once(bed: Bed, profiles: dict[str, str]) -> None:
    _create_without_setup(bed, STOPPED)

    # How long the waves take is a benchmark's figure (bench/b4_fleet.py); here a hang is
    # caught by each process's own time limit (`_run_together`).
    wave = [
        *(["launch", n, "--profile", n, *launch_args()[4:]] for n in LAUNCHED),
        *(["stop", n] for n in STOPPED),
        ["status", "--json"],
        ["status", "--json"],
    ]
    assert len(wave) == 8
    results = _run_together(bed, wave)
    _check(results)
    for _args, _, out, _ in results[:3]:
        notebook_answers(out)
    assert inserts(bed) == 6, "one insert per instance"
    _consistent(bed, {**dict.fromkeys(LAUNCHED, "running"), **dict.fromkeys(STOPPED, "stopped")})
    assert _logged(bed, "intent") == sorted(LAUNCHED + STOPPED)
    assert _logged(bed, "stopped") == sorted(STOPPED)
    assert _logged(bed, "autostopped") == [], "a user's stop was taken for autostop"
    tunnels = {r["name"]: r["tunnel_pid"] for r in db_rows(bed)}
    assert sorted(p for n, p in tunnels.items() if n in LAUNCHED) == tunnel_processes(bed)
    # What status shows afterwards is the same truth.
    shown = {i["name"]: i["status"] for i in status_json(bed)}
    assert shown == {**dict.fromkeys(LAUNCHED, "running"), **dict.fromkeys(STOPPED, "stopped")}

    wave = [
        *(["down", n, "--yes"] for n in LAUNCHED + STOPPED),
        ["status", "--json"],
        ["status", "--offline", "--json"],
    ]
    _check(_run_together(bed, wave))
    _consistent(bed, {})
    assert _logged(bed, "destroyed") == sorted(LAUNCHED + STOPPED)
    assert _logged(bed, "forgotten") == sorted(LAUNCHED + STOPPED)
    assert tunnel_processes(bed) == []


def test_a_stop_during_a_status_refresh_is_the_users(
    bed: Bed, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving the waves above can only hit by chance, made certain: `status` reads
    the rows, then a `stop` runs to completion in another process, then status's cloud call
    answers "stopped". The row must stay the user's stop, not become an autostop."""
    from orchestrate.plugins.providers.gcp.provider import GcpProvider

    _create_without_setup(bed, ["sa"])
    real_get = GcpProvider.get
    stops: list[int] = []

    def get_after_a_stop(self: GcpProvider, record: Any) -> Any:
        if not stops:
            stops.append(bed.cli("stop", "sa").returncode)
        return real_get(self, record)

    monkeypatch.setattr(GcpProvider, "get", get_after_a_stop)
    result = cli("status", "--json")
    assert result.code == 0 and stops == [0], result.err
    [row] = db_rows(bed)
    assert row["status"] == "stopped"
    assert "stopped_by" not in json.loads(row["extra_json"]), row["extra_json"]
    assert _logged(bed, "autostopped") == [], "the user's stop was taken for autostop"
    assert _logged(bed, "stopped") == ["sa"]
