"""The EC2 Query API parameters orchestrate sends, as pure functions, and the instance parser.

`plan()` (``--dry-run``) and the provider's `create()` build their requests here, so the dry
run shows what a launch sends. Nothing here reads credentials or the network.

Choices the seed workflow implies, written down once:

- the key pair is named after the public key's hash (``orchestrate-<16 hex>``) unless the
  profile names one, so an existing pair with that name is the same key and can be reused
  without comparing fingerprints (EC2 computes those differently per key type);
- the security group opens the SSH port only (tcp:22 by default) to the world; Jupyter stays
  on the host's 127.0.0.1 and is reached through the SSH tunnel;
- the instance goes into the zone's default subnet (or the profile's ``subnet_id``) with a
  public address on its first network interface;
- the root volume is gp3, sized by ``disk_gb``, and deleted with the instance;
- IMDSv2 is required (no token-less metadata requests from the notebook container);
- a spot instance is *persistent* and *stops* when interrupted, since only such spot
  instances can be stopped and started again like the on-demand ones;
- tags mark the instance (and its volume) as orchestrate's so `list`/`find` never see others.
"""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.provider import LaunchSpec, PlannedRequest
from orchestrate.plugins.providers.aws.api import items, tags_of, text
from orchestrate.plugins.providers.aws.options import AwsOptions

MANAGED_TAG = "orchestrate"
MANAGED_VALUE = "1"
NAME_TAG = "orchestrate-name"
GROUP_DESCRIPTION = "orchestrate: SSH to notebook hosts (Jupyter is reached through the tunnel)"
WORLD = "0.0.0.0/0"
LIVE_STATES = ("pending", "running", "stopping", "stopped")

#: EC2 instance states -> core's.
STATE_MAP: Mapping[str, str] = {
    "pending": p.PENDING,
    "running": p.RUNNING,
    "stopping": p.STOPPING,
    "stopped": p.STOPPED,
    "shutting-down": p.TERMINATED,
    "terminated": p.TERMINATED,
}


def key_blob(public_key: str) -> bytes:
    """The decoded key of an OpenSSH public key line (``type base64 [comment]``)."""
    fields = public_key.split()
    if len(fields) < 2:
        raise ValueError("not an OpenSSH public key line")
    return base64.b64decode(fields[1], validate=True)


def fingerprint(public_key: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint, for messages and the dry run."""
    digest = hashlib.sha256(key_blob(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def key_pair_name(public_key: str, options: AwsOptions) -> str:
    if options.key_name:
        return options.key_name
    return "orchestrate-" + hashlib.sha256(key_blob(public_key)).hexdigest()[:16]


def filters(values: Mapping[str, str | Sequence[str]]) -> dict[str, str]:
    """``{"name": "x", "state": ["a", "b"]}`` -> ``Filter.N.Name`` / ``Filter.N.Value.M``."""
    params: dict[str, str] = {}
    for index, (name, value) in enumerate(values.items(), start=1):
        params[f"Filter.{index}.Name"] = name
        for number, entry in enumerate([value] if isinstance(value, str) else value, start=1):
            params[f"Filter.{index}.Value.{number}"] = entry
    return params


def zones_query(region: str) -> dict[str, str]:
    """DescribeAvailabilityZones: the region's available zones (no Local/Wavelength Zones)."""
    return filters({"region-name": region, "state": "available", "zone-type": "availability-zone"})


def image_query(options: AwsOptions) -> dict[str, str]:
    """DescribeImages: the explicit ``ami``, or the owner's images matching ``ami_name``."""
    if options.ami:
        return {"ImageId.1": options.ami}
    return {
        "Owner.1": options.ami_owner,
        **filters(
            {
                "name": options.ami_name,
                "architecture": options.architecture,
                "state": "available",
                "root-device-type": "ebs",
            }
        ),
    }


def newest_image(response: ET.Element) -> tuple[str, str] | None:
    """(image id, root device name) of the newest image in a DescribeImages response."""
    found = []
    for item in items(response, "imagesSet"):
        image_id = text(item, "imageId")
        if not image_id or (text(item, "imageState") or "available") != "available":
            continue
        created = text(item, "creationDate") or ""
        found.append((created, text(item, "name") or "", image_id, text(item, "rootDeviceName")))
    if not found:
        return None
    _, _, image_id, root = max(found)
    return image_id, root or "/dev/sda1"


def key_query(name: str) -> dict[str, str]:
    return filters({"key-name": name})


def import_key_params(name: str, public_key: str) -> dict[str, str]:
    material = base64.b64encode(public_key.strip().encode()).decode()
    return {"KeyName": name, "PublicKeyMaterial": material}


def subnet_query(options: AwsOptions, zone: str) -> dict[str, str]:
    if options.subnet_id:  # a filter, not SubnetId.1: a wrong id gives no match, not an error
        return filters({"subnet-id": options.subnet_id})
    return filters({"availability-zone": zone, "default-for-az": "true"})


def group_query(name: str, vpc_id: str) -> dict[str, str]:
    return filters({"group-name": name, "vpc-id": vpc_id})


def create_group_params(name: str, vpc_id: str) -> dict[str, str]:
    return {"GroupName": name, "GroupDescription": GROUP_DESCRIPTION, "VpcId": vpc_id}


def ingress_params(group_id: str, port: int) -> dict[str, str]:
    return {
        "GroupId": group_id,
        "IpPermissions.1.IpProtocol": "tcp",
        "IpPermissions.1.FromPort": str(port),
        "IpPermissions.1.ToPort": str(port),
        "IpPermissions.1.IpRanges.1.CidrIp": WORLD,
        "IpPermissions.1.IpRanges.1.Description": "orchestrate ssh",
    }


#: A cluster's security group is `CLUSTER_PREFIX + name`; it admits only its own members.
CLUSTER_PREFIX = "orchestrate-cluster-"


def cluster_group_name(cluster: str) -> str:
    return f"{CLUSTER_PREFIX}{cluster}"


def create_cluster_group_params(cluster: str, vpc_id: str) -> dict[str, str]:
    return {
        "GroupName": cluster_group_name(cluster),
        "GroupDescription": f"orchestrate: traffic between the nodes of the cluster {cluster} only",
        "VpcId": vpc_id,
    }


def self_ingress_params(group_id: str) -> dict[str, str]:
    """Every protocol from members of the group itself, no address range: Ray's ports stay
    closed to anything outside the cluster."""
    return {
        "GroupId": group_id,
        "IpPermissions.1.IpProtocol": "-1",
        "IpPermissions.1.Groups.1.GroupId": group_id,
        "IpPermissions.1.Groups.1.Description": "orchestrate cluster nodes",
    }


def default_vpc_query() -> dict[str, str]:
    return filters({"isDefault": "true"})


def opens_port(group: ET.Element, port: int) -> bool:
    """Whether a DescribeSecurityGroups item already lets the world in on tcp `port`."""
    for permission in items(group, "ipPermissions"):
        protocol = text(permission, "ipProtocol")
        low, high = text(permission, "fromPort"), text(permission, "toPort")
        if protocol == "-1":
            ranges = [text(r, "cidrIp") for r in items(permission, "ipRanges")]
            if WORLD in ranges:
                return True
            continue
        if protocol != "tcp" or low is None or high is None:
            continue
        ranges = [text(r, "cidrIp") for r in items(permission, "ipRanges")]
        if int(low) <= port <= int(high) and WORLD in ranges:
            return True
    return False


def instance_tags(spec: LaunchSpec) -> dict[str, str]:
    """Core's labels, then orchestrate's own tags (which always win)."""
    tags = {str(k): str(v) for k, v in spec.labels.items()}
    tags["Name"] = spec.name
    tags[MANAGED_TAG] = MANAGED_VALUE
    tags[NAME_TAG] = spec.name
    return tags


def _tag_spec(index: int, resource: str, tags: Mapping[str, str]) -> dict[str, str]:
    params = {f"TagSpecification.{index}.ResourceType": resource}
    for number, (key, value) in enumerate(tags.items(), start=1):
        params[f"TagSpecification.{index}.Tag.{number}.Key"] = key
        params[f"TagSpecification.{index}.Tag.{number}.Value"] = value
    return params


def run_params(
    spec: LaunchSpec,
    options: AwsOptions,
    *,
    image_id: str,
    root_device: str,
    subnet_id: str,
    group_id: str,
    key_name: str,
    client_token: str,
    cluster_group_id: str | None = None,
) -> dict[str, str]:
    """RunInstances for `spec`. The subnet decides the zone, so no Placement is sent. A
    cluster node is also a member of its cluster's group."""
    tags = instance_tags(spec)
    params = {
        "ImageId": image_id,
        "InstanceType": options.instance_type,
        "MinCount": "1",
        "MaxCount": "1",
        "KeyName": key_name,
        "ClientToken": client_token,
        "NetworkInterface.1.DeviceIndex": "0",
        "NetworkInterface.1.SubnetId": subnet_id,
        "NetworkInterface.1.SecurityGroupId.1": group_id,
        "NetworkInterface.1.AssociatePublicIpAddress": "true" if options.public_ip else "false",
        "NetworkInterface.1.DeleteOnTermination": "true",
        "BlockDeviceMapping.1.DeviceName": root_device,
        "BlockDeviceMapping.1.Ebs.VolumeSize": str(options.disk_gb),
        "BlockDeviceMapping.1.Ebs.VolumeType": "gp3",
        "BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
        "MetadataOptions.HttpTokens": "required",
        "MetadataOptions.HttpEndpoint": "enabled",
        **_tag_spec(1, "instance", tags),
        **_tag_spec(2, "volume", tags),
    }
    if cluster_group_id is not None:
        params["NetworkInterface.1.SecurityGroupId.2"] = cluster_group_id
    if options.spot:
        params.update(
            {
                "InstanceMarketOptions.MarketType": "spot",
                "InstanceMarketOptions.SpotOptions.SpotInstanceType": "persistent",
                "InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior": "stop",
            }
        )
    if spec.startup_script:
        params["UserData"] = base64.b64encode(spec.startup_script.encode()).decode()
    return params


def instance_ids(instance_id: str) -> dict[str, str]:
    return {"InstanceId.1": instance_id}


def managed_query(name: str) -> dict[str, str]:
    """DescribeInstances filter for orchestrate's live instances named `name`."""
    values: dict[str, str | Sequence[str]] = {
        f"tag:{MANAGED_TAG}": MANAGED_VALUE,
        f"tag:{NAME_TAG}": name,
        "instance-state-name": list(LIVE_STATES),
    }
    return filters(values)


@dataclass(frozen=True)
class Instance:
    """The parts of a DescribeInstances item orchestrate uses."""

    instance_id: str
    state: str
    zone: str | None
    public_ip: str | None
    private_ip: str | None
    instance_type: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return STATE_MAP.get(self.state, p.UNKNOWN)


def parse_instance(item: ET.Element) -> Instance:
    state = text(item, "instanceState/name") or ""
    return Instance(
        instance_id=text(item, "instanceId") or "",
        state=state,
        zone=text(item, "placement/availabilityZone"),
        public_ip=text(item, "ipAddress"),
        private_ip=text(item, "privateIpAddress"),
        instance_type=text(item, "instanceType"),
        tags=tags_of(item),
    )


def parse_instances(response: ET.Element) -> list[Instance]:
    """Every instance of a DescribeInstances (or RunInstances) response."""
    found = [parse_instance(i) for i in items(response, "instancesSet")]
    for reservation in items(response, "reservationSet"):
        found.extend(parse_instance(i) for i in items(reservation, "instancesSet"))
    return found


# ---------------------------------------------------------------- dry run
def _request(action: str, params: Mapping[str, Any]) -> PlannedRequest:
    """As libcloud's EC2 connection sends it: GET, the parameters in the signed query."""
    return PlannedRequest("GET", f"/?Action={action}", dict(params))


def plan(spec: LaunchSpec, options: AwsOptions, zone: str | None) -> list[PlannedRequest]:
    """The requests `create` sends for `spec` in `zone` (the first candidate zone).

    Values only known from an earlier answer are shown as ``<...>``. ImportKeyPair,
    CreateSecurityGroup and AuthorizeSecurityGroupIngress are sent only when the key pair, the
    group or its SSH rule is missing; DescribeInstances repeats until the instance runs. The
    public key is shown by fingerprint, the user data by size: neither is secret, both are long.
    """
    zone_name = zone or f"the first available zone of {options.region}"
    key_name = key_pair_name(spec.ssh_public_key, options)
    requests = [
        _request("DescribeAvailabilityZones", zones_query(options.region)),
        _request("DescribeImages", image_query(options)),
    ]
    requests.append(_request("DescribeKeyPairs", key_query(key_name)))
    requests.append(
        _request(
            "ImportKeyPair",
            {"KeyName": key_name, "PublicKeyMaterial": f"<{fingerprint(spec.ssh_public_key)}>"},
        )
    )
    zone_value = zone or f"<{zone_name}>"
    requests.append(_request("DescribeSubnets", subnet_query(options, zone_value)))
    vpc = "<VpcId of the subnet>"
    requests.append(_request("DescribeSecurityGroups", group_query(options.security_group, vpc)))
    requests.append(
        _request("CreateSecurityGroup", create_group_params(options.security_group, vpc))
    )
    group = f"<GroupId of {options.security_group}>"
    requests.append(
        _request("AuthorizeSecurityGroupIngress", ingress_params(group, options.ssh_port))
    )
    cluster_group = None
    if spec.cluster:
        name = cluster_group_name(spec.cluster)
        requests.append(_request("DescribeSecurityGroups", group_query(name, vpc)))
        requests.append(
            _request("CreateSecurityGroup", create_cluster_group_params(spec.cluster, vpc))
        )
        cluster_group = f"<GroupId of {name}>"
        requests.append(
            _request("AuthorizeSecurityGroupIngress", self_ingress_params(cluster_group))
        )
    run = run_params(
        spec,
        options,
        cluster_group_id=cluster_group,
        image_id=f"<{options.ami}>" if options.ami else "<newest image of DescribeImages>",
        root_device="<rootDeviceName of the image>",
        subnet_id=options.subnet_id or f"<default subnet of {zone_name}>",
        group_id=group,
        key_name=key_name,
        client_token="<random per create>",
    )
    if "UserData" in run:
        size = len((spec.startup_script or "").encode())
        run["UserData"] = f"<base64 of the {size}-byte startup script>"
    requests.append(_request("RunInstances", run))
    requests.append(_request("DescribeInstances", {"InstanceId.1": "<from RunInstances>"}))
    return requests
