"""launch shows the price before creating anything and asks above `confirm_above`; status
shows cost so far, disk cost when stopped, and names autostop when it stopped an instance.

Runs against the fake GCE API (libcloud's real driver over HTTP). Nothing here can be billed;
the prices are the dated estimates of core/money/data/prices.toml.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from orchestrate.core.wiring.registry import build_manager
from orchestrate.core.wiring.runtime import Runtime

PROFILE = """
[profiles.t4]
provider = "gcp"
autostop = "60m"
confirm_above = {threshold}

[profiles.t4.gcp]
project = "{project}"
credentials = "{credentials}"
api_endpoint = "{endpoint}"
zones = ["us-east1-d"]
"""


@pytest.fixture
def t4(gce_api, gce_credentials: Path, write_profiles):
    def write(threshold: float) -> None:
        write_profiles(
            PROFILE.format(
                threshold=threshold,
                project=gce_api.project,
                credentials=gce_credentials,
                endpoint=gce_api.endpoint,
            )
        )

    return write


def test_price_above_threshold_stops_launch_before_any_request(t4, cli, gce_api) -> None:
    t4(0.05)
    result = cli("launch", "nb", "--profile", "t4", "--no-browser")
    assert result.code == 2
    from orchestrate.core.money import billing, prices

    expected = prices.hourly(
        "gcp", "n1-standard-2", "nvidia-tesla-t4", 1, False, disk_type="pd-balanced", disk_gb=50,
        regions=["us-east1"],
    )  # fmt: skip
    lines = result.err.strip().splitlines()
    assert lines[0] == prices.price_line(expected)
    assert f"about {billing.money(expected.per_hour)}/h" in lines[-1]
    assert "above your confirm_above of $0.050/h" in lines[-1]
    assert "pass --yes" in lines[-1]
    assert gce_api.requests == [], "nothing may reach the cloud before the user agrees"


def test_price_line_names_the_region_of_the_profiles_zone(t4, cli) -> None:
    """The price file holds the reference region's prices only (us-central1 for GCE): an
    instance bound for us-east1-d must not read them as its own region's."""
    t4(100)
    result = cli("launch", "nb", "--profile", "t4", "--dry-run")
    assert result.code == 0, result.err
    line = next(x for x in result.err.splitlines() if x.startswith("estimated price:"))
    assert "list prices for us-central1 (the price file's reference; us-east1 may differ)" in (
        line
    ), line


def test_dry_run_shows_the_price_and_asks_nothing(t4, cli) -> None:
    t4(0.05)
    result = cli("launch", "nb", "--profile", "t4", "--dry-run")
    assert result.code == 0, result.err
    assert "/h" in result.err
    assert "POST /compute/v1/projects/" in result.out


def test_status_names_autostop_and_disk_cost_for_a_stopped_instance(
    t4, gce_api, orch_home: Path
) -> None:
    """The agent powers the host off from inside; a test cannot power this machine off, so
    the fake's stop call stands in for the agent's shutdown (the cloud sees the same)."""
    from orchestrate.core.flows.status import collect

    from tests.support.gce_rows import launched

    t4(50)
    runtime = Runtime(pm=build_manager())
    record = launched(runtime, ("nb",), profile="t4")["nb"]
    state = runtime.state()
    state.update("nb", started_at=time.time() - 7200)

    running = collect(runtime, None, refresh=True)[0]
    assert running["status"] == "running"
    assert any("so far at $" in note for note in running["notes"]), running["notes"]

    runtime.provider("gcp").stop(record)  # what the agent's power-off looks like from the cloud
    stopped = collect(runtime, None, refresh=True)[0]
    assert stopped["status"] in ("stopped", "terminated")
    assert "stopped by autostop after 60 min idle" in stopped["notes"]
    assert any("disk" in note for note in stopped["notes"]), stopped["notes"]
    assert [e.kind for e in state.events("nb")][-1] == "autostopped"
    runtime.close()


def test_status_offline_prices_launched_rows_without_loading_a_provider(
    gce_api, gce_credentials: Path, write_profiles, orch_home: Path
) -> None:
    """`launch` writes the price into the row before its first cloud call, so `status
    --offline` over rows made by it prices them from the state alone: no provider plugin, no
    libcloud, no host-step or agent code in that process. One row runs without autostop
    (its warning comes from the profile), one is stopped (its disk cost is shown)."""
    from orchestrate.core.flows.status import collect

    from tests.support.gce_rows import launched
    from tests.support.modules import modules_after

    table = PROFILE.format(
        threshold=50,
        project=gce_api.project,
        credentials=gce_credentials,
        endpoint=gce_api.endpoint,
    )
    write_profiles(table + table.replace("t4", "open").replace('"60m"', '"off"'))
    runtime = Runtime(pm=build_manager())
    state = runtime.state()
    launched(runtime, ("nb1",), profile="open")
    record = launched(runtime, ("nb2",), profile="t4")["nb2"]
    for name in ("nb1", "nb2"):
        row = state.get(name)
        assert row is not None and row.extra["price_per_hour"] > 0
    state.update("nb1", started_at=time.time() - 7200)
    runtime.provider("gcp").stop(record)
    state.update("nb2", status="stopped")
    rows = {r["name"]: r for r in collect(runtime, None, refresh=False)}
    runtime.close()
    assert any("so far at $" in n for n in rows["nb1"]["notes"]), rows["nb1"]["notes"]
    assert any("without autostop" in n for n in rows["nb1"]["notes"]), rows["nb1"]["notes"]
    assert any("disk" in n for n in rows["nb2"]["notes"]), rows["nb2"]["notes"]

    code, modules = modules_after("status", "--offline")
    assert code == 0
    heavy = [
        m
        for m in modules
        # (the bare `orchestrate.plugins.providers` package holds only a docstring: finding
        # which built-ins implement the notes hook reads their sources, importing parents)
        if m.startswith(("orchestrate.plugins.providers.", "libcloud", "paramiko"))
        or m
        in (
            "orchestrate.core.flows.launch",
            "orchestrate.plugins.host.autostop.step",
            "orchestrate.plugins.host.autostop.agent",
        )
    ]
    assert not heavy, heavy
    assert "orchestrate.plugins.host.autostop.report" in modules, "the warning was worded"


def test_an_unknown_price_is_said_and_asked_only_when_every_launch_is_confirmed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The ssh provider states no price: above 0, `confirm_above` cannot be compared with it,
    so launch says so and goes on; at 0 ("ask every time") it asks, and without a terminal
    refuses with a hint that does not tell the user to raise the threshold."""
    from types import SimpleNamespace

    from orchestrate.core.api.errors import OrchestrateError
    from orchestrate.core.app.commands.lifecycle import _price_gate
    from orchestrate.plugins.providers.ssh.provider import SshProvider

    provider = SshProvider()
    options = provider.validate_options({"host": "me@192.0.2.10"}, "test")
    plan = SimpleNamespace(provider=provider, options=options)
    _price_gate(plan, 5.0, yes=False)
    assert "estimated price: unknown (ssh states no price)" in capsys.readouterr().err
    with pytest.raises(OrchestrateError) as refused:
        _price_gate(plan, 0.0, yes=False)
    assert "set confirm_above above 0" in str(refused.value.hint)
    assert "raise confirm_above" not in str(refused.value.hint)
    _price_gate(plan, 0.0, yes=True)
