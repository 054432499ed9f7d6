"""The AWS EC2 provider: core's `Provider` contract on libcloud's EC2 driver.

One profile targets one region; its zones (the ``zones`` key, else every available zone of the
region, by name) are what the failover loop walks. Creating in a zone means: the newest
Canonical Ubuntu 22.04 image (or the profile's ``ami``), the user's key imported as a key pair,
a security group opening the SSH port only, the zone's default subnet (or ``subnet_id``), then
RunInstances and a wait until the instance runs with an address.

Everything needed to reach the instance again (region, endpoint, credentials *reference*) is
kept in the record's ``extra``, since `get`/`start`/`stop`/`destroy` receive only the record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import CapacityError, NotFound, ProfileError, ProviderError
from orchestrate.core.api.provider import (
    GpuRequest,
    InstanceRecord,
    LaunchSpec,
    PlannedRequest,
    PriceQuery,
    Provider,
)
from orchestrate.core.api.retry import Retry
from orchestrate.plugins.providers.aws import instance_types as types
from orchestrate.plugins.providers.aws import resources as r
from orchestrate.plugins.providers.aws.api import Ec2Api, items, text
from orchestrate.plugins.providers.aws.credentials import describe_credentials, load_credentials
from orchestrate.plugins.providers.aws.options import (
    AwsOptions,
    parse_options,
    region_of,
    with_overrides,
)

FIRST_POLL_S = 0.5
MAX_POLL_S = 5.0
#: EC2 reports a new instance id before DescribeInstances knows it (eventual consistency).
NOT_YET_VISIBLE_S = 60.0

SessionKey = tuple[str, str | None, str | None]


class AwsProvider(Provider):
    """Amazon EC2 through libcloud's ``EC2NodeDriver`` (imported on the first API call)."""

    name = "aws"
    description = (
        "Amazon EC2: GPU instance types (g4dn T4, g5 A10G, g6 L4, g6e L40S, p4d, p5), and "
        "clusters (a security group admitting only its own nodes)"
    )
    default_ssh_user = "ubuntu"

    def __init__(
        self,
        *,
        sleep: Callable[[float], None] = time.sleep,
        wait_timeout_s: float = 900.0,
        retry_deadline_s: float = 60.0,
    ) -> None:
        self._sleep = sleep
        self.wait_timeout_s = wait_timeout_s
        self.retry_deadline_s = retry_deadline_s
        self._apis: dict[SessionKey, Ec2Api] = {}
        self._zones: dict[SessionKey, list[str]] = {}
        self._images: dict[tuple[SessionKey, tuple[tuple[str, str], ...]], tuple[str, str]] = {}

    # ------------------------------------------------------------ options
    def validate_options(self, table: Mapping[str, Any], where: str) -> AwsOptions:
        return parse_options(table, where)

    def apply_overrides(self, options: Any, overrides: Mapping[str, Any]) -> AwsOptions:
        return with_overrides(options, overrides)

    def gpu_request(self, options: Any) -> GpuRequest | None:
        return _options(options).gpu

    def ssh_user(self, options: Any) -> str:
        return _options(options).ssh_user

    def price_query(self, options: Any) -> PriceQuery:
        """EC2 prices include the GPUs; the root volume is the price list's default (gp3)."""
        opts = _options(options)
        return PriceQuery(
            machine_type=opts.instance_type,
            gpu=opts.gpu,
            spot=opts.spot,
            disk_gb=opts.disk_gb,
            regions=(opts.region,),  # an EC2 profile works in one region
        )

    def redacted_options(self, options: Any) -> Mapping[str, Any]:
        data = _options(options).as_dict()
        data["credentials"] = describe_credentials(data["credentials"])
        return data

    def plan(self, spec: LaunchSpec) -> Sequence[PlannedRequest]:
        options = _options(spec.options)
        return r.plan(spec, options, options.zones[0] if options.zones else None)

    # ------------------------------------------------------------ sessions
    def _api(self, key: SessionKey) -> Ec2Api:
        api = self._apis.get(key)
        if api is None:
            from orchestrate.plugins.providers.aws.driver import build_driver, known_regions

            region, endpoint, credentials = key
            secrets = load_credentials(credentials)
            try:
                driver = build_driver(secrets, region, endpoint)
            except ValueError:
                raise ProfileError(
                    f"aws: region {region!r} is not known to libcloud",
                    hint="known: " + ", ".join(known_regions()),
                ) from None
            api = Ec2Api(driver, region, retry_deadline_s=self.retry_deadline_s, sleep=self._sleep)
            self._apis[key] = api
        return api

    def gpu_locations(self, options: Any) -> Mapping[str, Sequence[str]]:
        """`orchestrate gpus --refresh`: GPU -> the zones of the profile's region where a
        type carrying it is offered now (``DescribeInstanceTypeOfferings``)."""
        opts = _options(options)
        api = self._api(self._key(opts))
        params = {"LocationType": "availability-zone", "Filter.1.Name": "instance-type"}
        for index, row in enumerate(types.GPU_TYPES, start=1):
            params[f"Filter.1.Value.{index}"] = row.name
        found: dict[str, set[str]] = {}
        context = "listing GPU instance type offerings"
        for page in api.pages("DescribeInstanceTypeOfferings", params, context=context):
            for item in items(page, "instanceTypeOfferingSet"):
                offered = types.BY_NAME.get(text(item, "instanceType") or "")
                zone = text(item, "location")
                if offered is not None and zone:
                    found.setdefault(offered.gpu, set()).add(zone)
        return {gpu: sorted(zones) for gpu, zones in sorted(found.items())}

    @staticmethod
    def _key(options: AwsOptions) -> SessionKey:
        return options.region, options.endpoint, options.credentials

    @staticmethod
    def _record_key(record: InstanceRecord) -> SessionKey:
        extra = record.extra
        region = extra.get("region") or region_of(record.zone or "")
        if not region:
            raise NotFound(f"aws: the record of {record.name} names no region")
        return str(region), extra.get("endpoint"), extra.get("credentials")

    # ------------------------------------------------------------ zones
    def _available_zones(self, key: SessionKey) -> list[str]:
        zones = self._zones.get(key)
        if zones is None:
            api = self._api(key)
            response = api.call(
                "DescribeAvailabilityZones",
                r.zones_query(api.region),
                context=f"listing the zones of {api.region}",
            )
            zones = sorted(
                name
                for item in items(response, "availabilityZoneInfo")
                if (name := text(item, "zoneName"))
            )
            self._zones[key] = zones
        return zones

    def preflight(self, spec: LaunchSpec) -> None:
        """Credentials load, the region answers, and the profile's zones exist there."""
        options = _options(spec.options)
        available = self._available_zones(self._key(options))
        missing = [z for z in options.zones if z not in available]
        if missing:
            raise ProfileError(
                f"aws {options.region}: zone {missing[0]} is not available to this account",
                hint=f"available: {', '.join(available) or 'none'}",
            )

    def candidate_zones(self, spec: LaunchSpec) -> Sequence[str]:
        options = _options(spec.options)
        key = self._key(options)
        if options.subnet_id:
            _, zone, _ = self._subnet(self._api(key), options, None)
            if options.zones and zone not in options.zones:
                raise ProfileError(
                    f"aws: subnet {options.subnet_id} is in {zone}, not in {options.zones[0]}",
                    hint="drop zones (the subnet decides the zone) or pick a subnet there",
                )
            return [zone]
        return list(options.zones) or self._available_zones(key)

    def region_of(self, zone: str, options: Any) -> str:
        return region_of(zone)

    # ------------------------------------------------------------ building blocks
    def _image(self, api: Ec2Api, options: AwsOptions) -> tuple[str, str]:
        query = r.image_query(options)
        cache_key = (self._key(options), tuple(sorted(query.items())))
        cached = self._images.get(cache_key)
        if cached is not None:
            return cached
        what = f"image {options.ami}" if options.ami else "the Ubuntu image"
        response = api.call("DescribeImages", query, context=f"looking up {what}")
        found = r.newest_image(response)
        if found is None:
            if options.ami:
                raise ProviderError(
                    f"aws {api.region}: image {options.ami} does not exist there",
                    hint="AMI ids differ per region",
                )
            raise ProviderError(
                f"aws {api.region}: no {options.architecture} image named "
                f"{options.ami_name!r} owned by {options.ami_owner}",
                hint="check ami_name/ami_owner, or set ami to an image id of this region",
            )
        self._images[cache_key] = found
        return found

    def _ensure_key(self, api: Ec2Api, spec: LaunchSpec, options: AwsOptions) -> str:
        try:
            name = r.key_pair_name(spec.ssh_public_key, options)
        except ValueError:
            raise ProviderError("aws: the SSH public key is not an OpenSSH key line") from None
        found = api.call("DescribeKeyPairs", r.key_query(name), context="looking up the key pair")
        if not items(found, "keySet"):
            try:
                api.call(
                    "ImportKeyPair",
                    r.import_key_params(name, spec.ssh_public_key),
                    context=f"importing key pair {name}",
                )
            except ProviderError as exc:
                if "InvalidKeyPair.Duplicate" not in exc.message:  # a parallel launch won
                    raise
        return name

    def _subnet(self, api: Ec2Api, options: AwsOptions, zone: str | None) -> tuple[str, str, str]:
        """(subnet id, its zone, its VPC) for `zone`: the profile's subnet or the default one."""
        query = r.subnet_query(options, zone or "")
        where = f"subnet {options.subnet_id}" if options.subnet_id else f"a subnet in {zone}"
        response = api.call("DescribeSubnets", query, context=f"finding {where}")
        for item in items(response, "subnetSet"):
            subnet, in_zone = text(item, "subnetId"), text(item, "availabilityZone")
            vpc = text(item, "vpcId")
            if subnet and in_zone and vpc:
                return subnet, in_zone, vpc
        if options.subnet_id:
            raise ProviderError(
                f"aws {api.region}: subnet {options.subnet_id} does not exist",
                hint="subnet ids differ per region and account",
            )
        raise ProviderError(
            f"aws {api.region}: no default subnet in {zone} (the account may have no default "
            "VPC there)",
            hint="set subnet_id in the profile's aws table to a public subnet of that zone",
        )

    def _ensure_group(self, api: Ec2Api, options: AwsOptions, vpc_id: str) -> str:
        name = options.security_group
        context = f"setting up security group {name}"
        response = api.call("DescribeSecurityGroups", r.group_query(name, vpc_id), context=context)
        groups = items(response, "securityGroupInfo")
        if groups:
            group_id = text(groups[0], "groupId")
            if group_id and r.opens_port(groups[0], options.ssh_port):
                return group_id
        else:
            try:
                created = api.call(
                    "CreateSecurityGroup", r.create_group_params(name, vpc_id), context=context
                )
            except ProviderError as exc:
                if "InvalidGroup.Duplicate" not in exc.message:
                    raise
                return self._ensure_group(api, options, vpc_id)  # a parallel launch made it
            group_id = text(created, "groupId")
        if not group_id:
            raise ProviderError(f"aws {api.region}: EC2 answered {context} without a group id")
        try:
            api.call(
                "AuthorizeSecurityGroupIngress",
                r.ingress_params(group_id, options.ssh_port),
                context=context,
            )
        except ProviderError as exc:
            if "InvalidPermission.Duplicate" not in exc.message:
                raise
        return group_id

    # ------------------------------------------------------------ clusters
    def _ensure_cluster_group(self, api: Ec2Api, cluster: str, vpc_id: str) -> str:
        """The cluster's group in `vpc_id`, made if missing, admitting itself on everything."""
        name = r.cluster_group_name(cluster)
        context = f"setting up security group {name}"
        response = api.call("DescribeSecurityGroups", r.group_query(name, vpc_id), context=context)
        groups = items(response, "securityGroupInfo")
        if groups:
            group_id = text(groups[0], "groupId")
            if group_id and items(groups[0], "ipPermissions"):
                return group_id
        else:
            try:
                created = api.call(
                    "CreateSecurityGroup",
                    r.create_cluster_group_params(cluster, vpc_id),
                    context=context,
                )
            except ProviderError as exc:
                if "InvalidGroup.Duplicate" not in exc.message:
                    raise
                return self._ensure_cluster_group(api, cluster, vpc_id)  # a parallel create
            group_id = text(created, "groupId")
        if not group_id:
            raise ProviderError(f"aws {api.region}: EC2 answered {context} without a group id")
        try:
            api.call(
                "AuthorizeSecurityGroupIngress", r.self_ingress_params(group_id), context=context
            )
        except ProviderError as exc:
            if "InvalidPermission.Duplicate" not in exc.message:
                raise
        return group_id

    def _vpc(self, api: Ec2Api, options: AwsOptions) -> str:
        """The VPC the nodes are made in: the profile's subnet's, else the default one."""
        if options.subnet_id:
            return self._subnet(api, options, None)[2]
        response = api.call("DescribeVpcs", r.default_vpc_query(), context="finding the VPC")
        for item in items(response, "vpcSet"):
            vpc = text(item, "vpcId")
            if vpc:
                return vpc
        raise ProviderError(
            f"aws {api.region}: the account has no default VPC",
            hint="set subnet_id in the profile's aws table to a public subnet",
        )

    def ensure_cluster_network(self, cluster: str, options: Any) -> None:
        """`ClusterNetworks`: the group `orchestrate-cluster-<name>`, whose only ingress
        rule admits its own members on every protocol; each node joins it at create."""
        opts = _options(options)
        api = self._api(self._key(opts))
        self._ensure_cluster_group(api, cluster, self._vpc(api, opts))

    def release_cluster_network(self, cluster: str, options: Any) -> None:
        """Delete the cluster's group. EC2 refuses while a terminating node still holds it
        (DependencyViolation), so that is waited out; gone already is fine."""
        opts = _options(options)
        api = self._api(self._key(opts))
        name = r.cluster_group_name(cluster)
        context = f"deleting security group {name}"
        response = api.call(
            "DescribeSecurityGroups", r.filters({"group-name": name}), context=context
        )
        policy = Retry(deadline_s=self.wait_timeout_s, first_s=2.0, max_s=15.0, sleep=self._sleep)
        for group in items(response, "securityGroupInfo"):
            group_id = text(group, "groupId")
            if not group_id:
                continue

            def delete(group_id: str = group_id) -> Any:
                return api.call("DeleteSecurityGroup", {"GroupId": group_id}, context=context)

            def held(error: Exception) -> bool:
                return isinstance(error, ProviderError) and "DependencyViolation" in error.message

            try:
                policy.call(delete, retry_if=held)
            except NotFound:
                continue

    def _describe(self, api: Ec2Api, instance_id: str) -> r.Instance | None:
        response = api.call(
            "DescribeInstances",
            r.instance_ids(instance_id),
            context=f"reading instance {instance_id}",
        )
        found = [i for i in r.parse_instances(response) if i.instance_id == instance_id]
        return found[0] if found else None

    def _wait(
        self,
        api: Ec2Api,
        instance_id: str,
        *,
        until: str,
        need_address: bool = False,
        public: bool = True,
        zone: str | None = None,
        fresh: bool = False,
    ) -> r.Instance:
        """Poll until the instance is in state `until` and, with `need_address`, has its
        public (or, with `public` False, private) address.

        `fresh`: just created, so "not found" means "not visible yet" for a while, and an
        instance that terminates before running ran out of capacity (EC2 can accept a
        RunInstances and then fail to place it).
        """
        started = time.monotonic()

        def read() -> r.Instance | None:
            try:
                return self._describe(api, instance_id)
            except NotFound:
                return None

        def done(instance: r.Instance | None) -> bool:
            if instance is None:
                if not (fresh and time.monotonic() - started < NOT_YET_VISIBLE_S):
                    raise NotFound(f"aws {api.region}: instance {instance_id} is gone")
                return False
            if instance.state == until and (not need_address or _address(instance, public=public)):
                return True
            if fresh and instance.state in ("shutting-down", "terminated"):
                raise CapacityError(
                    f"{zone}: EC2 terminated {instance_id} before it ran (likely no capacity)",
                    zone=zone or "",
                )
            return False

        policy = Retry(
            deadline_s=self.wait_timeout_s,
            first_s=FIRST_POLL_S,
            max_s=MAX_POLL_S,
            factor=1.6,
            sleep=self._sleep,
        )
        instance, ready = policy.poll(read, done)
        if ready and instance is not None:
            return instance
        state = instance.state if instance else "not visible"
        raise ProviderError(
            f"aws {api.region}: {instance_id} is still {state} after "
            f"{self.wait_timeout_s:.0f}s (waiting for {until})",
            hint="see the instance in the EC2 console; `orchestrate status` checks again",
        )

    # ------------------------------------------------------------ life cycle
    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        options = _options(spec.options)
        key = self._key(options)
        api = self._api(key)
        image_id, root_device = self._image(api, options)
        key_name = self._ensure_key(api, spec, options)
        subnet_id, subnet_zone, vpc_id = self._subnet(api, options, zone)
        group_id = self._ensure_group(api, options, vpc_id)
        cluster_group = (
            self._ensure_cluster_group(api, spec.cluster, vpc_id) if spec.cluster else None
        )
        params = r.run_params(
            spec,
            options,
            image_id=image_id,
            root_device=root_device,
            subnet_id=subnet_id,
            group_id=group_id,
            key_name=key_name,
            client_token=uuid.uuid4().hex,
            cluster_group_id=cluster_group,
        )
        response = api.call(
            "RunInstances",
            params,
            context=f"creating {spec.name} in {subnet_zone}",
            zone=subnet_zone,
            instance_type=options.instance_type,
            spot=options.spot,
        )
        launched = r.parse_instances(response)
        if not launched or not launched[0].instance_id:
            raise ProviderError(f"aws {api.region}: RunInstances answered without an instance id")
        instance = self._wait(
            api,
            launched[0].instance_id,
            until="running",
            need_address=True,
            public=options.public_ip,
            zone=subnet_zone,
            fresh=True,
        )
        return _record(spec.name, instance, options.ssh_user, options.ssh_port, _extra(options))

    def get(self, record: InstanceRecord) -> InstanceRecord:
        if not record.cloud_id:
            raise NotFound(f"aws: {record.name} has no instance id")
        api = self._api(self._record_key(record))
        instance = self._describe(api, record.cloud_id)
        if instance is None or instance.status == p.TERMINATED:
            raise NotFound(f"aws {api.region}: instance {record.cloud_id} is gone")
        return _refresh(record, instance)

    def get_many(self, records: Sequence[InstanceRecord]) -> dict[str, InstanceRecord | None]:
        """`RefreshesMany`: one DescribeInstances per region (and credentials) for all the
        records. By an ``instance-id`` filter, not ``InstanceId.N``: EC2 fails the whole
        call when one listed id no longer exists, a filter just leaves it out."""
        groups: dict[SessionKey, list[InstanceRecord]] = {}
        found: dict[str, InstanceRecord | None] = {}
        for record in records:
            if record.cloud_id:
                groups.setdefault(self._record_key(record), []).append(record)
            else:
                found[record.name] = None
        for key, group in groups.items():
            api = self._api(key)
            response = api.call(
                "DescribeInstances",
                r.filters({"instance-id": [str(record.cloud_id) for record in group]}),
                context=f"reading {len(group)} instances",
            )
            listed = {i.instance_id: i for i in r.parse_instances(response)}
            for record in group:
                instance = listed.get(str(record.cloud_id))
                if instance is None or instance.status == p.TERMINATED:
                    found[record.name] = None
                else:
                    found[record.name] = _refresh(record, instance)
        return found

    def start(self, record: InstanceRecord) -> InstanceRecord:
        current = self.get(record)
        api = self._api(self._record_key(record))
        instance_id = str(record.cloud_id)
        if current.status == p.RUNNING and current.address:
            return current
        if current.status == p.STOPPING:
            self._wait(api, instance_id, until="stopped")
        if current.status != p.PENDING:
            api.call(
                "StartInstances", r.instance_ids(instance_id), context=f"starting {record.name}"
            )
        public = bool(record.extra.get("public_ip", True))
        instance = self._wait(api, instance_id, until="running", need_address=True, public=public)
        return _refresh(current, instance)

    def stop(self, record: InstanceRecord) -> None:
        current = self.get(record)
        if current.status == p.STOPPED:
            return
        api = self._api(self._record_key(record))
        instance_id = str(record.cloud_id)
        if current.status == p.PENDING:
            self._wait(api, instance_id, until="running")
        api.call("StopInstances", r.instance_ids(instance_id), context=f"stopping {record.name}")
        self._wait(api, instance_id, until="stopped")

    def destroy(self, record: InstanceRecord) -> None:
        if not record.cloud_id:
            return
        try:
            self.get(record)  # terminated or unknown already: nothing to send
        except NotFound:
            return
        api = self._api(self._record_key(record))
        try:
            api.call(
                "TerminateInstances",
                r.instance_ids(record.cloud_id),
                context=f"terminating {record.name}",
            )
        except NotFound:
            return

    def find(self, spec: LaunchSpec) -> InstanceRecord | None:
        options = _options(spec.options)
        found = self._named(options, spec.name)
        if not found:
            return None
        rank = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3}
        best = min(found, key=lambda i: rank.get(i.state, 9))
        return _record(spec.name, best, options.ssh_user, options.ssh_port, _extra(options))

    def _named(self, options: AwsOptions, name: str) -> Sequence[r.Instance]:
        api = self._api(self._key(options))
        found: list[r.Instance] = []
        for page in api.pages(
            "DescribeInstances", r.managed_query(name), context="listing orchestrate's instances"
        ):
            found.extend(r.parse_instances(page))
        return found


def _options(options: Any) -> AwsOptions:
    if not isinstance(options, AwsOptions):
        raise TypeError(f"aws provider got {type(options).__name__} options, not AwsOptions")
    return options


def _extra(options: AwsOptions) -> dict[str, Any]:
    """What `get`/`start`/`stop`/`destroy` need later; names and URLs only, no secret."""
    return {
        "region": options.region,
        "endpoint": options.endpoint,
        "credentials": options.credentials,
        "public_ip": options.public_ip,
        "instance_type": options.instance_type,
        "spot": options.spot,
    }


def _address(instance: r.Instance, *, public: bool) -> str | None:
    return instance.public_ip if public else instance.private_ip


def _record(
    name: str, instance: r.Instance, ssh_user: str, ssh_port: int, extra: dict[str, Any]
) -> InstanceRecord:
    return InstanceRecord(
        name=name,
        provider="aws",
        zone=instance.zone,
        cloud_id=instance.instance_id,
        status=instance.status,
        address=_address(instance, public=bool(extra.get("public_ip", True))),
        internal_address=instance.private_ip,
        ssh_user=ssh_user,
        ssh_port=ssh_port,
        extra=dict(extra),
    )


def _refresh(record: InstanceRecord, instance: r.Instance) -> InstanceRecord:
    """`record` with the cloud's current status, zone and address."""
    public = bool(record.extra.get("public_ip", True))
    return InstanceRecord(
        name=record.name,
        provider=record.provider,
        zone=instance.zone or record.zone,
        cloud_id=record.cloud_id,
        status=instance.status,
        address=_address(instance, public=public),
        internal_address=instance.private_ip,
        ssh_user=record.ssh_user,
        ssh_port=record.ssh_port,
        extra=dict(record.extra),
    )
