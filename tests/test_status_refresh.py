"""`status` asks the cloud about many rows in one call where the provider can.

Against the fake GCE API with libcloud's real driver: the fake's request log shows which
reads `status` made.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.registry import build_manager
from orchestrate.core.runtime import Runtime

from tests.bed.gce_fake import GceFake

PROFILE = """
[profiles.cpu]
provider = "gcp"
autostop = "60m"

[profiles.cpu.gcp]
project = "{project}"
credentials = "{credentials}"
api_endpoint = "{endpoint}"
accelerator = "none"
zones = ["us-east1-d"]
"""


def _reads(fake: GceFake, since: int) -> list[str]:
    return [r.path.split("/projects/", 1)[-1] for r in fake.requests[since:] if r.method == "GET"]


@pytest.fixture
def cpu_profile(
    gce_api: GceFake, gce_credentials: Path, write_profiles: Any, orch_home: Path
) -> Iterator[GceFake]:
    """A CPU profile `cpu` against the fake; yields the fake."""
    write_profiles(
        PROFILE.format(
            project=gce_api.project, credentials=gce_credentials, endpoint=gce_api.endpoint
        )
    )
    yield gce_api


def _launched(runtime: Runtime, names: tuple[str, ...]) -> dict[str, Any]:
    """Instances made by launch's own cloud step (no host set-up: status needs none)."""
    from orchestrate.core.instances import ensure_running
    from orchestrate.core.launch import make_plan, record_intent

    records = {}
    for name in names:
        plan = make_plan(runtime, name, runtime.profile("cpu"), {}, token=None)
        record_intent(runtime.state(), plan)
        records[name] = ensure_running(runtime.state(), plan.provider, plan.spec, lambda m: None)
    return records


def test_many_rows_cost_one_listing_and_a_deleted_one_shows_missing(
    cpu_profile: GceFake,
) -> None:
    from orchestrate.core.status import collect

    gce_api = cpu_profile
    runtime = Runtime(pm=build_manager())
    try:
        records = _launched(runtime, ("nb1", "nb2", "nb3"))
        gcp = runtime.provider("gcp")
        gcp.stop(records["nb2"])
        gcp.destroy(records["nb3"])
        before = len(gce_api.requests)

        rows = {r["name"]: r for r in collect(runtime, None, refresh=True)}

        assert _reads(gce_api, before) == [f"{gce_api.project}/aggregated/instances"]
        assert rows["nb1"]["status"] == "running"
        assert rows["nb2"]["status"] == "stopped"
        assert rows["nb3"]["status"] == "missing"
        assert any("gone on the cloud side" in n for n in rows["nb3"]["notes"])
        stored = runtime.state().get("nb2")
        assert stored is not None and stored.status == "stopped", "what was learnt is kept"

        before = len(gce_api.requests)
        (one,) = collect(runtime, "nb1", refresh=True)
        assert one["status"] == "running"
        assert _reads(gce_api, before) == [
            f"{gce_api.project}/zones/us-east1-d/instances/nb1"
        ], "one row is read directly"
    finally:
        runtime.close()


def test_a_listing_that_fails_is_a_note_on_every_row(cpu_profile: GceFake) -> None:
    from orchestrate.core.status import collect

    gce_api = cpu_profile
    runtime = Runtime(pm=build_manager())
    try:
        _launched(runtime, ("nb1", "nb2"))
        gce_api.faults.auth_failure = True
        from orchestrate.plugins.providers.gcp.driver import forget_sign_ins

        forget_sign_ins()  # a new process: it signs in, and is refused
        runtime.close()
        runtime = Runtime(pm=build_manager())
        rows = collect(runtime, None, refresh=True)
        assert [r["status"] for r in rows] == ["running", "running"], "the state's word stays"
        for row in rows:
            assert any(n.startswith("could not refresh") for n in row["notes"]), row
    finally:
        runtime.close()
