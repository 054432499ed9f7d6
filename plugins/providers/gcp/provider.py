"""`GcpProvider`: creating the GPU VM on Google Compute Engine behind core's contract.

Life cycle: `preflight` finds what would make every zone fail (credentials, project, image,
where the accelerator is offered, global then regional GPU quota) before anything is created;
core's failover loop then calls `create` zone by zone in `candidate_zones` order, and reads
this provider's typed errors to go on or stop. `get`/`start`/`stop`/`destroy` need only the
stored record (see `connection.connection_of`).

One instance of this class lives for one CLI command. It caches the signed-in API session,
the zones offering an accelerator, the regional quota read by preflight (so `create` skips an
exhausted region without sending an insert) and which networks have the SSH rule.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrate.core.api import gpu_catalog
from orchestrate.core.api.errors import NotFound, ProfileError, QuotaError
from orchestrate.core.api.provider import (
    GpuRequest,
    InstanceRecord,
    LaunchSpec,
    PlannedRequest,
    PriceQuery,
    Provider,
)
from orchestrate.core.api.retry import Retry
from orchestrate.plugins.providers.gcp import checks
from orchestrate.plugins.providers.gcp import resources as res
from orchestrate.plugins.providers.gcp.api import GceApi
from orchestrate.plugins.providers.gcp.connection import (
    Connection,
    connection_for,
    connection_of,
    sign_in,
)
from orchestrate.plugins.providers.gcp.credentials import describe_credentials, load_credentials
from orchestrate.plugins.providers.gcp.errors import AlreadyExists
from orchestrate.plugins.providers.gcp.firewall import (
    ensure_cluster_rule,
    ensure_firewall,
    managed_instances,
    release_cluster_rule,
    release_firewall,
)
from orchestrate.plugins.providers.gcp.options import (
    GcpOptions,
    check_retired,
    parse_options,
    with_overrides,
)
from orchestrate.plugins.providers.gcp.plan import plan_requests
from orchestrate.plugins.providers.gcp.records import locate_record, to_record
from orchestrate.plugins.providers.gcp.zones import (
    gpu_quota_metric,
    order_cheapest,
    order_nearest,
    quota_hint,
    region_of,
)


def _options(value: Any) -> GcpOptions:
    if not isinstance(value, GcpOptions):
        raise TypeError(f"gcp options must come from validate_options, not {type(value)}")
    return value


class GcpProvider(Provider):
    """Google Compute Engine through libcloud (imported on the first API call only)."""

    name = "gcp"
    description = (
        "Google Compute Engine: GPU VMs with zone and region failover, and clusters (a "
        "firewall rule by network tag between their nodes)"
    )
    default_ssh_user = "orchestrate"

    def __init__(
        self,
        *,
        retry_deadline_s: float = 60.0,
        operation_timeout_s: float = 600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retry_deadline_s = retry_deadline_s
        self.operation_timeout_s = operation_timeout_s
        self._sleep = sleep
        self._apis: dict[Connection, GceApi] = {}
        self._offers: dict[tuple[str, str | None], list[str]] = {}
        self._headroom: dict[tuple[str, str, str], float] = {}
        self._firewalls_ready: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ options
    def validate_options(self, table: Mapping[str, Any], where: str) -> GcpOptions:
        return parse_options(table, where)

    def apply_overrides(self, options: Any, overrides: Mapping[str, Any]) -> GcpOptions:
        return with_overrides(_options(options), overrides)

    def gpu_request(self, options: Any) -> GpuRequest | None:
        return _options(options).gpu

    def ssh_user(self, options: Any) -> str:
        return _options(options).ssh_user

    def price_query(self, options: Any) -> PriceQuery:
        """GCE bills spot and preemptible VMs alike, and the boot disk by its own type."""
        opts = _options(options)
        return PriceQuery(
            machine_type=opts.machine_type,
            gpu=opts.gpu,
            spot=opts.interruptible,
            disk_type=opts.disk_type,
            disk_gb=opts.disk_gb,
            regions=tuple(dict.fromkeys(region_of(zone) for zone in opts.zones)),
        )

    def redacted_options(self, options: Any) -> Mapping[str, Any]:
        data = _options(options).as_dict()
        data["credentials"] = describe_credentials(_options(options).credentials)
        return data

    def plan(self, spec: LaunchSpec) -> Sequence[PlannedRequest]:
        """See `plan.plan_requests`: no network, no secret."""
        return plan_requests(spec, _options(spec.options))

    # --------------------------------------------------------------- sessions
    def connect(self, options: Any) -> tuple[Connection, GceApi]:
        """The signed-in API session for a profile's options (cached per connection)."""
        credentials = load_credentials(_options(options).credentials)
        connection = connection_for(_options(options), credentials)
        return connection, self._session(connection)

    def _session(self, connection: Connection) -> GceApi:
        api = self._apis.get(connection)
        if api is None:
            driver = sign_in(
                load_credentials(connection.credentials),
                connection,
                deadline_s=self.retry_deadline_s,
                sleep=self._sleep,
            )
            api = GceApi(
                driver,
                connection.project,
                retry_deadline_s=self.retry_deadline_s,
                sleep=self._sleep,
            )
            self._apis[connection] = api
        return api

    def _reconnect(self, record: InstanceRecord) -> tuple[Connection, GceApi, str, str]:
        connection = connection_of(record)
        zone, name = locate_record(record)
        return connection, self._session(connection), zone, name

    # --------------------------------------------------------------- preflight
    def preflight(self, spec: LaunchSpec) -> None:
        """Order: a retired GPU (no request needed), credentials file, project, sign-in,
        global GPU quota (0 on new projects: stop at once with the fix), image, zones offering
        the accelerator, then the quota of every candidate region (all exhausted: stop; some:
        `create` skips them)."""
        options = _options(spec.options)
        check_retired(options)
        _, api = self.connect(options)
        gpu = options.gpu
        if gpu is not None:
            checks.check_global_gpu_quota(api, gpu)
        checks.check_image(api, options)
        offered = self._offering_zones(api, options.accelerator)
        what = options.accelerator or "this machine"
        if options.zones:
            missing = [z for z in options.zones if z not in offered]
            if missing:
                nearest = order_nearest(offered, options.preferred_region)[:6]
                raise ProfileError(
                    f"gcp: {what} is not offered in {', '.join(missing)}",
                    hint=f"zones that offer it: {', '.join(nearest) or 'none'}",
                )
        elif not offered:
            raise ProfileError(
                f"gcp: no zone of project {api.project} offers {what}",
                hint="check the name: gcloud compute accelerator-types list",
            )
        if gpu is not None:
            self._read_regional_quota(api, options, gpu, options.zones or offered)

    def _offering_zones(self, api: GceApi, accelerator: str | None) -> list[str]:
        key = (api.project, accelerator)
        if key not in self._offers:
            self._offers[key] = checks.offering_zones(api, accelerator)
        return self._offers[key]

    def _read_regional_quota(
        self, api: GceApi, options: GcpOptions, gpu: GpuRequest, zones: Sequence[str]
    ) -> None:
        metric = gpu_quota_metric(gpu.name, interruptible=options.interruptible)
        regions = sorted({region_of(z) for z in zones})
        for region, left in checks.regional_headroom(api, metric, regions).items():
            self._headroom[(api.project, region, metric)] = left
        if all(self._headroom.get((api.project, r, metric), math.inf) < gpu.count for r in regions):
            raise QuotaError(
                f"gcp project {api.project}: no candidate region has {metric} quota left for "
                f"{gpu.count} GPU(s) ({', '.join(regions)})",
                scope="cloud",
                hint=quota_hint(api.project, metric),
            )

    def gpu_locations(self, options: Any) -> Mapping[str, Sequence[str]]:
        """`orchestrate gpus --refresh`: where each accelerator type is offered now, from
        the project's aggregated ``acceleratorTypes`` listing."""
        _, api = self.connect(_options(options))
        return checks.accelerator_zones(api)

    # ------------------------------------------------------------------- zones
    def candidate_zones(self, spec: LaunchSpec) -> Sequence[str]:
        """The profile's zones as listed; else every zone offering the accelerator, cheapest
        first, then nearest region first (the rule is in `zones`)."""
        options = _options(spec.options)
        if options.zones:
            return list(options.zones)
        _, api = self.connect(options)
        offered = self._offering_zones(api, options.accelerator)
        gpu = options.gpu
        pair = None if gpu is None else (gpu.name, gpu.count)
        return order_cheapest(
            offered,
            options.preferred_region,
            lambda zone: gpu_catalog.gce_zone_price(
                options.machine_type, pair, zone, spot=options.interruptible
            ),
        )

    def region_of(self, zone: str, options: Any) -> str:
        return region_of(zone)

    # ------------------------------------------------------------------ create
    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        """Insert in `zone`, wait for the operation, return the running instance's record.

        An insert answered 409 (an earlier try got through) adopts the existing instance.
        """
        options = _options(spec.options)
        connection, api = self.connect(options)
        gpu = options.gpu
        if gpu is not None:
            self._skip_known_exhausted_region(api, options, gpu, zone)
        if (api.project, options.network) not in self._firewalls_ready:
            ensure_firewall(api, options.network, timeout_s=self.operation_timeout_s)
            self._firewalls_ready.add((api.project, options.network))
        body = res.instance_body(spec, options, zone)
        context = f"creating {body['name']} in {zone}"
        try:
            operation = api.request(
                "POST", f"/zones/{zone}/instances", body, context=context, zone=zone
            )
            api.wait(operation, context=context, zone=zone, timeout_s=self.operation_timeout_s)
        except AlreadyExists:
            pass
        instance = self._await_running(api, zone, body["name"], context)
        return to_record(
            instance,
            connection,
            name=spec.name,
            ssh_user=options.ssh_user,
            ssh_port=options.ssh_port,
        )

    def _skip_known_exhausted_region(
        self, api: GceApi, options: GcpOptions, gpu: GpuRequest, zone: str
    ) -> None:
        metric = gpu_quota_metric(gpu.name, interruptible=options.interruptible)
        region = region_of(zone)
        left = self._headroom.get((api.project, region, metric))
        if left is not None and left < gpu.count:
            raise QuotaError(
                f"{metric} quota exhausted in {region} ({left:g} left, {gpu.count} needed)",
                scope="region",
                region=region,
                hint=quota_hint(api.project, metric),
            )

    def _await_running(self, api: GceApi, zone: str, name: str, context: str) -> dict[str, Any]:
        """The instance once RUNNING with an external address (or stopped, or timed out)."""

        def settled(instance: dict[str, Any]) -> bool:
            status = instance.get("status")
            running = status == "RUNNING" and res.external_ip(instance) is not None
            return running or status in ("TERMINATED", "SUSPENDED")

        policy = Retry(
            deadline_s=self.operation_timeout_s,
            first_s=0.05,
            max_s=2.0,
            factor=1.6,
            sleep=self._sleep,
        )
        instance, _ = policy.poll(
            lambda: api.request("GET", res.instance_path(zone, name), context=context, zone=zone),
            settled,
        )
        return instance

    # ---------------------------------------------------------------- clusters
    def ensure_cluster_network(self, cluster: str, options: Any) -> None:
        """`ClusterNetworks`: the rule `orchestrate-cluster-<name>` on the profile's network,
        from and to the instances tagged with that name, every protocol."""
        opts = _options(options)
        _, api = self.connect(opts)
        ensure_cluster_rule(api, cluster, opts.network, timeout_s=self.operation_timeout_s)

    def release_cluster_network(self, cluster: str, options: Any) -> None:
        """Delete the cluster's rule once no instance carries its tag any more."""
        _, api = self.connect(_options(options))
        release_cluster_rule(api, cluster, timeout_s=self.operation_timeout_s)

    # -------------------------------------------------------------- life cycle
    def get(self, record: InstanceRecord) -> InstanceRecord:
        connection, api, zone, name = self._reconnect(record)
        instance = api.request(
            "GET", res.instance_path(zone, name), context=f"reading {name}", zone=zone
        )
        return self._same_login(instance, connection, record)

    def start(self, record: InstanceRecord) -> InstanceRecord:
        """Start and return the record with the *new* address (ephemeral IPs change)."""
        connection, api, zone, name = self._reconnect(record)
        self._operate(
            api, "POST", res.instance_path(zone, name) + "/start", f"starting {name}", zone
        )
        instance = self._await_running(api, zone, name, f"starting {name}")
        return self._same_login(instance, connection, record)

    def stop(self, record: InstanceRecord) -> None:
        _, api, zone, name = self._reconnect(record)
        self._operate(
            api, "POST", res.instance_path(zone, name) + "/stop", f"stopping {name}", zone
        )

    def destroy(self, record: InstanceRecord) -> None:
        """Delete the instance (its boot disk goes with it), then the SSH firewall rule if no
        other orchestrate instance on the network uses it. Gone already is not an error."""
        _, api, zone, name = self._reconnect(record)
        with contextlib.suppress(NotFound):  # gone already
            self._operate(api, "DELETE", res.instance_path(zone, name), f"deleting {name}", zone)
        network = str(record.extra.get("network", "default"))
        if release_firewall(api, network, timeout_s=self.operation_timeout_s):
            self._firewalls_ready.discard((api.project, network))

    def _operate(self, api: GceApi, method: str, path: str, context: str, zone: str) -> None:
        operation = api.request(method, path, context=context, zone=zone)
        api.wait(operation, context=context, zone=zone, timeout_s=self.operation_timeout_s)

    def _same_login(
        self, instance: Mapping[str, Any], connection: Connection, record: InstanceRecord
    ) -> InstanceRecord:
        return to_record(
            instance,
            connection,
            name=record.name,
            ssh_user=record.ssh_user or self.default_ssh_user,
            ssh_port=record.ssh_port,
        )

    # ---------------------------------------------------------------- listing
    def get_many(self, records: Sequence[InstanceRecord]) -> dict[str, InstanceRecord | None]:
        """`RefreshesMany`: one aggregated listing per project (and credentials) instead of
        one read per instance; an instance missing from it is gone."""
        groups: dict[Connection, list[InstanceRecord]] = {}
        for record in records:
            groups.setdefault(connection_of(record), []).append(record)
        found: dict[str, InstanceRecord | None] = {}
        for connection, group in groups.items():
            listed = {
                res.locate(str(instance["selfLink"]))[1:]: instance
                for instance in managed_instances(self._session(connection))
            }
            for record in group:
                instance = listed.get(locate_record(record))
                found[record.name] = (
                    None if instance is None else self._same_login(instance, connection, record)
                )
        return found

    def find(self, spec: LaunchSpec) -> InstanceRecord | None:
        """The orchestrate instance named like `spec` in any zone, if it exists."""
        options = _options(spec.options)
        connection, api = self.connect(options)
        name = res.instance_name(spec.name)
        for instance in managed_instances(api, f'name = "{name}"'):
            if instance.get("name") == name:
                return to_record(
                    instance,
                    connection,
                    name=spec.name,
                    ssh_user=options.ssh_user,
                    ssh_port=options.ssh_port,
                )
        return None
