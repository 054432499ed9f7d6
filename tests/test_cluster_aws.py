"""AWS clusters against moto: the self-admitting security group, nodes in it, their private
addresses, and the group's release; libcloud's real EC2 driver over signed HTTP, checked
through boto3 against the same server."""

from __future__ import annotations

import dataclasses

from orchestrate.core.api.provider import CLUSTER_LABEL, ClusterNetworks

from tests.support.moto_ec2 import MotoEc2
from tests.test_provider_aws import (  # noqa: F401 - the moto fixtures are shared
    boto,
    moto,
    moto_server,
    provider_and_options,
    spec_for,
)

GROUP = "orchestrate-cluster-rc"


def node_spec(options: object, name: str) -> object:
    spec = spec_for(options, name=name)  # type: ignore[arg-type]
    labels = {**spec.labels, CLUSTER_LABEL: "rc"}
    return dataclasses.replace(spec, cluster="rc", labels=labels)


def groups_named(server: MotoEc2, name: str) -> list[dict]:
    response = boto(server).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}]
    )
    return list(response["SecurityGroups"])


def test_the_cluster_group_admits_only_itself(moto: MotoEc2) -> None:  # noqa: F811
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    assert isinstance(provider, ClusterNetworks)
    provider.ensure_cluster_network("rc", options)
    provider.ensure_cluster_network("rc", options)  # found, not made twice
    (group,) = groups_named(moto, GROUP)
    (rule,) = group["IpPermissions"]
    assert rule["IpProtocol"] == "-1"
    assert rule["IpRanges"] == [] and rule.get("Ipv6Ranges", []) == []
    assert [pair["GroupId"] for pair in rule["UserIdGroupPairs"]] == [group["GroupId"]]


def test_nodes_join_the_group_and_report_private_addresses(moto: MotoEc2) -> None:  # noqa: F811
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    provider.ensure_cluster_network("rc", options)
    records = [provider.create(node_spec(options, n), "us-east-1c") for n in ("rc", "rc-w1")]  # type: ignore[arg-type]
    (group,) = groups_named(moto, GROUP)
    ec2 = boto(moto)
    for record in records:
        assert record.internal_address and record.internal_address != record.address
        (reservation,) = ec2.describe_instances(InstanceIds=[record.cloud_id])["Reservations"]
        instance = reservation["Instances"][0]
        assert group["GroupId"] in [
            g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]
        ]
        assert instance["PrivateIpAddress"] == record.internal_address
        tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
        assert tags[CLUSTER_LABEL] == "rc"
    assert provider.get(records[0]).internal_address == records[0].internal_address


def test_release_deletes_the_group_once_and_is_quiet_after(moto: MotoEc2) -> None:  # noqa: F811
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    provider.ensure_cluster_network("rc", options)
    record = provider.create(node_spec(options, "rc"), "us-east-1c")  # type: ignore[arg-type]
    provider.destroy(dataclasses.replace(record, options=options))
    provider.release_cluster_network("rc", options)
    assert groups_named(moto, GROUP) == []
    provider.release_cluster_network("rc", options)  # gone already


def test_plan_shows_the_cluster_group(moto: MotoEc2) -> None:  # noqa: F811
    provider, options = provider_and_options(moto, zones=["us-east-1c"])
    requests = provider.plan(node_spec(options, "rc"))  # type: ignore[arg-type]
    actions = [r.path for r in requests]
    assert "/?Action=CreateSecurityGroup" in actions
    run = next(r.body for r in requests if r.path.endswith("RunInstances"))
    assert run["NetworkInterface.1.SecurityGroupId.2"] == f"<GroupId of {GROUP}>"
