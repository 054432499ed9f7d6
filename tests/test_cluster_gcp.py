"""GCP clusters against the fake Compute API: the cluster rule, tagged nodes, internal
addresses and the whole-cluster failover, through libcloud's real driver over HTTP."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from orchestrate.core.api.errors import CapacityError, QuotaError
from orchestrate.core.api.provider import CLUSTER_LABEL, ClusterNetworks, LaunchSpec
from orchestrate.core.cloud.cluster import create_cluster
from orchestrate.plugins.providers.gcp import GcpProvider
from orchestrate.plugins.providers.gcp.resources import SSH_TAG

from tests.bed.gce_fake import GceFake
from tests.support.gcp_provider import PUBLIC_KEY, Events

WHERE = "orchestrate.toml:7: [profiles.c.gcp]"
RULE = "orchestrate-cluster-rc"


def node_specs(gcp_table: dict[str, Any], count: int, **keys: Any) -> list[LaunchSpec]:
    provider = GcpProvider(retry_deadline_s=5.0)
    options = provider.validate_options({**gcp_table, **keys}, WHERE)
    names = ["rc"] + [f"rc-w{i}" for i in range(1, count)]
    return [
        LaunchSpec(
            name=name,
            provider="gcp",
            options=options,
            ssh_user="orchestrate",
            ssh_public_key=PUBLIC_KEY,
            gpu=provider.gpu_request(options),
            labels={"orchestrate": "1", "orchestrate-name": name, CLUSTER_LABEL: "rc"},
            cluster="rc",
        )
        for name in names
    ]


def test_cluster_rule_admits_only_the_clusters_own_nodes(
    gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    provider = GcpProvider(retry_deadline_s=5.0)
    assert isinstance(provider, ClusterNetworks)
    options = provider.validate_options(gcp_table, WHERE)
    provider.ensure_cluster_network("rc", options)
    provider.ensure_cluster_network("rc", options)  # a relaunch: found, not sent again
    rule = gce_api.firewalls[RULE]
    assert rule["direction"] == "INGRESS"
    assert rule["allowed"] == [{"IPProtocol": "all"}]
    assert rule["sourceTags"] == [RULE] and rule["targetTags"] == [RULE]
    assert rule["network"].endswith("/global/networks/default")
    posted = [r.body for r in gce_api.calls("POST", "/global/firewalls")]
    assert len(posted) == 1 and "sourceRanges" not in posted[0]


def test_nodes_are_made_in_one_zone_tagged_with_internal_addresses(
    gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    specs = node_specs(gcp_table, 3, zones=["us-central1-a"])
    made: list[str] = []
    records = create_cluster(
        lambda: GcpProvider(retry_deadline_s=5.0), specs, Events(),
        on_created=lambda record: made.append(record.name), on_removed=lambda record: None,
    )  # fmt: skip
    assert sorted(made) == ["rc", "rc-w1", "rc-w2"]
    assert {r.zone for r in records} == {"us-central1-a"}
    internal = [r.internal_address for r in records]
    assert all(internal) and len(set(internal)) == 3
    for instance in gce_api.instances.values():
        assert instance["tags"]["items"] == [SSH_TAG, RULE]
        assert instance["labels"][CLUSTER_LABEL] == "rc"


def test_a_stockout_moves_the_whole_cluster(gcp_table: dict[str, Any], gce_api: GceFake) -> None:
    gce_api.faults.stockout_zones.add("us-east1-d")
    specs = node_specs(gcp_table, 3, zones=["us-east1-d", "us-central1-a"])
    events = Events()
    records = create_cluster(
        lambda: GcpProvider(retry_deadline_s=5.0), specs, events,
        on_created=lambda record: None, on_removed=lambda record: None,
    )  # fmt: skip
    assert {r.zone for r in records} == {"us-central1-a"}
    assert events.kinds() == ["try", "stockout", "try", "created"]
    assert {_zone(i) for i in gce_api.instances.values()} == {"us-central1-a"}


def test_a_node_refused_for_quota_deletes_the_nodes_made_beside_it(
    gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    # Room for two nodes of two T4s, not three: two inserts succeed, the third is refused.
    gce_api.gpu_quota = 4.0
    specs = node_specs(gcp_table, 3, accelerator_count=2, zones=["us-central1-a"])
    removed: list[str] = []
    with pytest.raises((QuotaError, CapacityError)):
        create_cluster(
            lambda: GcpProvider(retry_deadline_s=5.0), specs, Events(),
            on_created=lambda record: None, on_removed=lambda record: removed.append(record.name),
        )  # fmt: skip
    assert len(removed) == 2
    assert gce_api.instances == {}
    assert len(gce_api.calls("DELETE", "/instances/")) == 2


def test_release_waits_for_the_last_tagged_instance(
    gcp_table: dict[str, Any], gce_api: GceFake
) -> None:
    specs = node_specs(gcp_table, 2, zones=["us-central1-a"])
    provider = GcpProvider(retry_deadline_s=5.0)
    provider.ensure_cluster_network("rc", specs[0].options)
    records = create_cluster(
        lambda: GcpProvider(retry_deadline_s=5.0), specs, Events(),
        on_created=lambda record: None, on_removed=lambda record: None,
    )  # fmt: skip
    provider.destroy(dataclasses.replace(records[1], options=specs[1].options))
    provider.release_cluster_network("rc", specs[0].options)
    assert RULE in gce_api.firewalls  # the head still carries the tag
    provider.destroy(dataclasses.replace(records[0], options=specs[0].options))
    provider.release_cluster_network("rc", specs[0].options)
    provider.release_cluster_network("rc", specs[0].options)  # gone already is fine
    assert RULE not in gce_api.firewalls


def test_plan_shows_the_cluster_rule(gcp_table: dict[str, Any]) -> None:
    spec = node_specs(gcp_table, 2)[0]
    requests = GcpProvider().plan(spec)
    bodies = [r.body for r in requests if r.body is not None]
    rule = next(b for b in bodies if b.get("name") == RULE)
    assert rule["sourceTags"] == rule["targetTags"] == [RULE]
    insert = next(b for b in bodies if "machineType" in b)
    assert insert["tags"]["items"] == [SSH_TAG, RULE]


def _zone(instance: dict[str, Any]) -> str:
    return str(instance["zone"]).rsplit("/", 1)[-1]
