"""State rows against the cloud's view: `status` reads many rows in one call where the
provider can, and a relaunch that has to make a new machine starts its row afresh.

Against the fake GCE API with libcloud's real driver: the fake's request log shows which
reads `status` made.
"""

from __future__ import annotations

from orchestrate.core.wiring.registry import build_manager
from orchestrate.core.wiring.runtime import Runtime

from tests.bed.gce_fake import GceFake
from tests.support.gce_rows import launched


def _reads(fake: GceFake, since: int) -> list[str]:
    return [r.path.split("/projects/", 1)[-1] for r in fake.requests[since:] if r.method == "GET"]


def test_many_rows_cost_one_listing_and_a_deleted_one_shows_missing(
    cpu_profile: GceFake,
) -> None:
    from orchestrate.core.flows.status import collect

    gce_api = cpu_profile
    runtime = Runtime(pm=build_manager())
    try:
        records = launched(runtime, ("nb1", "nb2", "nb3"))
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
    from orchestrate.core.flows.status import collect

    gce_api = cpu_profile
    runtime = Runtime(pm=build_manager())
    try:
        launched(runtime, ("nb1", "nb2"))
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


def test_an_instance_made_anew_is_pinned_and_set_up_anew(cpu_profile: GceFake) -> None:
    """The instance of a row vanished on the cloud; the next launch creates a new machine.
    The old machine's pinned host key and set-up hash must not carry over: the key would
    refuse the new machine, and the hash would take it for one set up already."""
    runtime = Runtime(pm=build_manager())
    try:
        records = launched(runtime, ("nb1",))
        state = runtime.state()
        state.update("nb1", host_key="ssh-ed25519 AAAAold", setup_hash="0123456789abcdef")
        runtime.provider("gcp").destroy(records["nb1"])

        launched(runtime, ("nb1",))

        row = state.get("nb1")
        assert row is not None and row.status == "running"
        assert row.host_key is None and row.setup_hash is None
        assert [e.kind for e in state.events("nb1")].count("vanished") == 1
    finally:
        runtime.close()
