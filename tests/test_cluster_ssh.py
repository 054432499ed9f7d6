"""The existing-host provider's clusters: one machine of `hosts = [...]` per node, the
internal address given or the host's own, and a network rule that is the user's own
network (a no-op, said in its description)."""

from __future__ import annotations

import dataclasses

import pytest
from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.provider import ClusterNetworks, LaunchSpec
from orchestrate.plugins.providers.ssh import SshProvider

WHERE = "orchestrate.toml:9: [profiles.rig.ssh]"
HOSTS = ["ubuntu@192.0.2.10", "ubuntu@192.0.2.11:2222", "me@box.lan"]


def spec(options: object, name: str, cluster: str | None = "rig") -> LaunchSpec:
    return LaunchSpec(name, "ssh", options, "ubuntu", "ssh-ed25519 AAAA", cluster=cluster)


def test_each_node_gets_its_host_in_order() -> None:
    provider = SshProvider()
    options = provider.validate_options(
        {"hosts": HOSTS, "internal_addresses": ["10.0.0.10", ""]}, WHERE
    )
    targets = [provider.plan(spec(options, n))[0].path for n in ("rig", "rig-w1", "rig-w2")]
    assert targets == [
        "ubuntu@192.0.2.10:22",
        "ubuntu@192.0.2.11:2222",
        "me@box.lan:22",
    ]
    assert provider.redacted_options(options)["hosts"] == targets
    assert isinstance(provider, ClusterNetworks)
    assert "no firewall rule" in provider.description
    provider.ensure_cluster_network("rig", options)  # the user's own network: nothing sent
    provider.release_cluster_network("rig", options)


def test_a_node_without_a_host_is_one_line() -> None:
    provider = SshProvider()
    options = provider.validate_options({"hosts": HOSTS[:2]}, WHERE)
    with pytest.raises(ProfileError, match="2 hosts, not enough for node 3 of rig"):
        provider.plan(spec(options, "rig-w2"))


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"hosts": []}, "must be a list"),
        ({"hosts": "ubuntu@192.0.2.10"}, "must be a list"),
        ({"hosts": ["ubuntu@192.0.2.10", "ubuntu@192.0.2.10"]}, "names a host twice"),
        ({"hosts": ["ubuntu@bad host"]}, "hosts[0]"),
        ({"hosts": HOSTS[:1], "internal_addresses": ["10.0.0.1", "10.0.0.2"]}, "more entries"),
        ({"hosts": HOSTS[:1], "internal_addresses": ["not an address!"]}, "internal_addresses[0]"),
    ],
)
def test_bad_hosts_tables_name_the_key(table: dict, fragment: str) -> None:
    with pytest.raises(ProfileError) as caught:
        SshProvider().validate_options(table, WHERE)
    assert fragment in caught.value.line()


def test_a_node_record_carries_its_internal_address(ssh_host) -> None:  # type: ignore[no-untyped-def]
    provider = SshProvider()
    head = f"{ssh_host.user}@{ssh_host.address}:{ssh_host.port}"
    options = provider.validate_options(
        {"hosts": [head, "ubuntu@192.0.2.11"], "internal_addresses": ["10.9.0.1"]}, WHERE
    )
    record = provider.create(spec(options, "rig"), "hosts")
    assert record.status == p.RUNNING and record.address == ssh_host.address
    assert record.internal_address == "10.9.0.1"
    assert provider.get(record).internal_address == "10.9.0.1"
    plain = provider.validate_options({"hosts": [head]}, WHERE)
    record = provider.create(spec(plain, "rig"), "hosts")
    assert record.internal_address == ssh_host.address
    lone = dataclasses.replace(spec(plain, "box", cluster=None))
    assert provider.create(lone, "x").address == ssh_host.address  # hosts[0] serves a lone one
