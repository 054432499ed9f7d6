"""Clusters through the CLI and core's flows, against the fake GCE API (libcloud's real
driver over HTTP), up to the point where SSH would begin: the price of the whole cluster
before anything is created, the one-line refusals, the nodes created together in one zone
and repaired, crash safety, `status`, `scale` down (with its drain hook) and `down`.

Host setup over SSH needs a machine per node: the multi-node bed's end-to-end test
(tests/e2e/test_cluster.py) covers it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api.errors import UsageError
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider
from orchestrate.core.flows.crashpoints import CLUSTER_POINTS, ENV
from orchestrate.core.wiring.registry import build_manager
from orchestrate.core.wiring.runtime import Runtime

from tests.bed.gce_fake import GceFake

PROFILE = """
[profiles.c]
provider = "gcp"
autostop = "off"
confirm_above = {threshold}
nodes = {nodes}

[profiles.c.gcp]
project = "{project}"
credentials = "{credentials}"
api_endpoint = "{endpoint}"
zones = ["us-east1-d", "us-east1-c"]
"""
RULE = "orchestrate-cluster-rc"


@pytest.fixture
def profile(gce_api: GceFake, gce_credentials: Path, write_profiles: Any) -> Callable[..., None]:
    def write(threshold: float = 100.0, nodes: int = 1) -> None:
        write_profiles(
            PROFILE.format(
                threshold=threshold,
                nodes=nodes,
                project=gce_api.project,
                credentials=gce_credentials,
                endpoint=gce_api.endpoint,
            )
        )

    return write


def one_node_price() -> float:
    from orchestrate.core.money import prices

    estimate = prices.hourly(
        "gcp", "n1-standard-2", "nvidia-tesla-t4", 1, False, disk_type="pd-balanced", disk_gb=50
    )
    assert estimate.per_hour is not None
    return estimate.per_hour


def rows() -> list[Any]:
    from orchestrate.core.store.state import open_state

    with open_state() as state:
        return state.all()


def test_the_whole_cluster_is_priced_and_gated_before_any_request(
    profile: Any, cli: Any, gce_api: GceFake
) -> None:
    one = one_node_price()
    profile(threshold=one * 2)  # one node passes the gate, three do not
    result = cli("launch", "rc", "--profile", "c", "--nodes", "3", "--no-browser")
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("estimated price: $") and "for 3 nodes" in lines[0]
    assert "3 nodes of n1-standard-2 cost about" in lines[-1]
    assert gce_api.requests == [], "nothing may reach the cloud before the user agrees"
    assert rows() == []


def test_dry_run_lists_the_nodes_and_the_cluster_rule(profile: Any, cli: Any) -> None:
    profile(nodes=2)
    result = cli("launch", "rc", "--profile", "c", "--dry-run")
    assert result.code == 0, result.err
    assert "for 2 nodes" in result.err
    assert "a cluster of 2 nodes: rc, rc-w1" in result.out
    assert f'"name": "{RULE}"' in result.out and '"sourceTags"' in result.out
    assert rows() == []


def test_a_name_that_cannot_tag_the_cluster_is_one_line(
    profile: Any, cli: Any, gce_api: GceFake
) -> None:
    profile()
    name = "c" * 44  # a valid instance name, one character too long for the cluster's tag
    result = cli("launch", name, "--profile", "c", "--nodes", "2", "--yes")
    assert result.code == 2
    (line, *_) = result.err.strip().splitlines()
    assert f"orchestrate-cluster-{name}" in line and "(nodes = 2)" in line
    assert "Traceback" not in result.err and gce_api.requests == []


def test_a_provider_without_cluster_networks_says_so_in_one_line() -> None:
    from orchestrate.core.flows.cluster import require_clusters

    class Plain(Provider):
        name = "plain"

        def create(self, spec: Any, zone: str) -> Any: ...
        def get(self, record: Any) -> Any: ...
        def start(self, record: Any) -> Any: ...
        def stop(self, record: Any) -> None: ...
        def destroy(self, record: Any) -> None: ...
        def validate_options(self, table: Any, where: str) -> Any: ...

    with pytest.raises(UsageError) as refused:
        require_clusters(Plain(), 3, "orchestrate.toml:4")
    assert refused.value.message == (
        "provider plain cannot make clusters (nodes = 3 in orchestrate.toml:4)"
    )
    assert refused.value.exit_code == 2


def runtime() -> Runtime:
    return Runtime(pm=build_manager())


def launch_nodes(count: int, progress: list[str]) -> Runtime:
    """What `launch rc --nodes COUNT` does before SSH: rows, the rule, the nodes running."""
    from orchestrate.core.flows.cluster import ensure_nodes, node_plans
    from orchestrate.core.flows.launch import record_intent

    made = runtime()
    profile = made.profile("c")
    plans = node_plans(made, "rc", profile, {}, token=None, nodes=count)
    for index, plan in enumerate(plans):
        record_intent(made.state(), plan)
        made.state().update(plan.name, cluster="rc", node_index=index)
    provider = plans[0].provider
    provider.ensure_cluster_network("rc", plans[0].options)  # type: ignore[attr-defined]
    ensure_nodes(made, plans, progress.append)
    return made


def test_nodes_are_created_together_and_a_lost_worker_is_recreated_in_their_zone(
    profile: Any, orch_home: Path, gce_api: GceFake
) -> None:
    profile()
    gce_api.faults.stockout_zones.add("us-east1-d")
    made = launch_nodes(3, [])
    instances = gce_api.instances
    assert sorted(instances) == ["rc", "rc-w1", "rc-w2"]
    assert {_zone(i) for i in instances.values()} == {"us-east1-c"}, "moved as a whole"
    stored = {row.name: row for row in made.state().nodes("rc")}
    assert [row.node_index for row in made.state().nodes("rc")] == [0, 1, 2]
    assert len({row.extra["internal_address"] for row in stored.values()}) == 3

    # A worker is lost: the next launch recreates it alone, in the cluster's zone.
    worker = stored["rc-w1"]
    from orchestrate.core.cloud.instances import record_of

    provider = made.provider("gcp")
    provider.destroy(record_of(worker, provider))
    before = len(gce_api.calls("POST", "/instances"))
    launch_nodes(3, progress := [])
    inserts = gce_api.calls("POST", "/instances")[before:]
    assert [r.body["name"] for r in inserts] == ["rc-w1"]
    assert _zone(gce_api.instances["rc-w1"]) == "us-east1-c"
    assert any("rc-w1" in line and "us-east1-c" in line for line in progress)


class Drains:
    """A plugin hearing `orchestrate_before_node_removed` (the Ray plugin stops Ray there)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    @hookimpl
    def orchestrate_before_node_removed(self, row: Any, session: Any) -> None:
        self.heard.append((row.name, session))


def test_hook_before_node_removed_drains_the_highest_workers_before_they_go(
    profile: Any, orch_home: Path, gce_api: GceFake
) -> None:
    from orchestrate.core.flows.cluster_ops import down_cluster, remove_workers

    profile()
    made = launch_nodes(3, [])
    drains = Drains()
    made.pm.register(drains)
    head = made.state().get("rc")
    assert head is not None
    removed = remove_workers(made, head, 1, progress=lambda line: None)
    assert removed == ["rc-w2", "rc-w1"]
    # No SSH host key was ever pinned here (no host was reached): the hook gets no session.
    assert sorted(drains.heard) == [("rc-w1", None), ("rc-w2", None)]
    assert sorted(gce_api.instances) == ["rc"]
    assert RULE in gce_api.firewalls, "the head still uses the rule"
    down_cluster(made, head, sync_to=None, progress=lambda line: None)
    assert gce_api.instances == {} and RULE not in gce_api.firewalls
    assert made.state().all() == []


def test_status_shows_a_cluster_as_one_entry_and_refuses_a_workers_name(
    profile: Any, orch_home: Path, gce_api: GceFake, cli: Any
) -> None:
    profile()
    launch_nodes(3, [])
    listed = json.loads(cli("status", "--json").out)
    assert [entry["name"] for entry in listed] == ["rc"]
    (entry,) = listed
    assert [n["name"] for n in entry["nodes"]] == ["rc", "rc-w1", "rc-w2"]
    assert {n["status"] for n in entry["nodes"]} == {"running"}
    assert {n["zone"] for n in entry["nodes"]} == {"us-east1-d"}
    assert all(n["internal_address"] and n["address"] for n in entry["nodes"])
    assert any(note.startswith("cluster: about $") for note in entry["notes"])
    text = cli("status", "rc").out
    assert "node 2 rc-w2" in text and "internal=" in text
    refused = cli("status", "rc-w1")
    assert refused.code == 2 and "worker of the cluster rc" in refused.err
    assert "`rc`" in refused.err
    down = cli("down", "rc", "--yes")
    assert down.code == 0, down.err
    assert "rc deleted (3 nodes)" in down.out
    assert gce_api.instances == {} and rows() == [] and RULE not in gce_api.firewalls


def test_a_launch_the_cloud_refuses_up_front_leaves_no_row_and_no_rule(
    profile: Any, cli: Any, gce_api: GceFake
) -> None:
    profile()
    gce_api.faults.zero_global_gpu_quota = True  # preflight stops it: no create is sent
    result = cli("launch", "rc", "--profile", "c", "--nodes", "3", "--yes", "--detach")
    assert result.code != 0 and "GPUS_ALL_REGIONS" in result.err, result.err
    assert gce_api.calls("POST", "/instances") == []
    assert rows() == []
    assert RULE not in gce_api.firewalls


def test_stop_stops_every_node(profile: Any, orch_home: Path, gce_api: GceFake, cli: Any) -> None:
    profile()
    launch_nodes(3, [])
    stopped = cli("stop", "rc")
    assert stopped.code == 0, stopped.err
    assert "rc stopped (every node)" in stopped.out
    assert {i["status"] for i in gce_api.instances.values()} == {"TERMINATED"}
    (entry,) = json.loads(cli("status", "--json").out)
    assert {n["status"] for n in entry["nodes"]} == {"stopped"}
    assert len(gce_api.calls("POST", "/stop")) == 3


@pytest.mark.parametrize("point", ["after-create-call", *CLUSTER_POINTS])
def test_a_crash_leaves_a_cluster_that_status_shows_and_down_cleans(
    point: str, profile: Any, orch_home: Path, gce_api: GceFake
) -> None:
    profile()

    def orchestrate(*args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != ENV}
        if crash:
            env[ENV] = crash
        return subprocess.run(
            [sys.executable, "-m", "orchestrate.core.app.cli", *args],
            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    crashed = orchestrate("launch", "rc", "--profile", "c", "--nodes", "3", "--yes",
                          "--detach", "--no-browser", crash=point)  # fmt: skip
    assert crashed.returncode == -9, crashed.stderr
    shown = json.loads(orchestrate("status", "--json").stdout)
    assert [entry["name"] for entry in shown] == ["rc"]
    assert len(shown[0]["nodes"]) == 3
    token = orch_home / "state" / "clusters" / "rc.token"
    if point == "cluster-after-token":
        assert token.stat().st_mode & 0o777 == 0o600
        assert token.read_text().strip() not in json.dumps(shown)
        assert not any(token.read_text().strip() in json.dumps(r.__dict__) for r in rows())
    down = orchestrate("down", "rc", "--yes")
    assert down.returncode == 0, down.stderr
    assert gce_api.instances == {}
    assert rows() == []
    assert RULE not in gce_api.firewalls
    assert not token.exists()


def _zone(instance: dict[str, Any]) -> str:
    return str(instance["zone"]).rsplit("/", 1)[-1]
