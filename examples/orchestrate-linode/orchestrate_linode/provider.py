"""`LinodeProvider`: orchestrate's provider contract on Linode (Akamai) through libcloud.

Written against orchestrate's documented public API only (CONTRIBUTING.md, "Writing a
provider plugin"): `orchestrate.core.api.provider` for the contract and its records,
`orchestrate.core.api.errors` for the typed errors, `orchestrate.core.api.hooks.hookimpl`
to register.

Linode has regions, no zones: each region is one "zone" for orchestrate's failover loop. A
Linode is created with the user's public key in root's ``authorized_keys`` (and a random root
password that is never stored or shown, because Linode requires one), tagged ``orchestrate``
and labelled ``orchestrate-<name>``. Labels are unique per account, which is how `find`
recognises an instance created before a crash.

Billing: Linode bills a Linode that is powered off like a running one. `stop` shuts it down
(the contract's meaning: the machine stops), but only `down` ends the bill; the provider's
description says so.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import CapacityError, NotFound, ProfileError, ProviderError
from orchestrate.core.api.provider import (
    GpuRequest,
    InstanceRecord,
    LaunchSpec,
    PlannedRequest,
    Provider,
)

from orchestrate_linode.api import LinodeApi, build_driver, load_token
from orchestrate_linode.options import LinodeOptions, parse_options, with_overrides

TAG = "orchestrate"
GPU_CAPABILITY = "GPU Linodes"
#: libcloud's NodeState values -> orchestrate's states.
STATES = {
    "running": p.RUNNING,
    "stopped": p.STOPPED,
    "starting": p.PENDING,
    "pending": p.PENDING,
    "rebooting": p.PENDING,
    "migrating": p.PENDING,
    "updating": p.PENDING,
    "reconfiguring": p.PENDING,
    "stopping": p.STOPPING,
    "terminated": p.TERMINATED,
}
_NOT_LABEL = re.compile(r"[^A-Za-z0-9-]+")


def _options(value: Any) -> LinodeOptions:
    if not isinstance(value, LinodeOptions):
        raise TypeError(f"linode options must come from validate_options, not {type(value)}")
    return value


def label_for(name: str) -> str:
    """A valid, account-unique Linode label for orchestrate's instance `name`."""
    text = re.sub(r"-{2,}", "-", _NOT_LABEL.sub("-", name)).strip("-")
    return f"orchestrate-{text}"[:64].rstrip("-")


def fingerprint(public_key: str) -> str:
    fields = public_key.split()
    blob = base64.b64decode(fields[1]) if len(fields) > 1 else public_key.encode()
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def create_body(spec: LaunchSpec, options: LinodeOptions, region: str) -> dict[str, Any]:
    """``POST /v4/linode/instances`` as libcloud's ``create_node`` sends it, secrets elided."""
    body: dict[str, Any] = {
        "region": region,
        "type": options.plan,
        "image": options.image,
        "label": label_for(spec.name),
        "root_pass": "<random, never stored>",
        "authorized_keys": [
            f"<{spec.ssh_public_key.split()[0]} {fingerprint(spec.ssh_public_key)}>"
        ],
        "tags": [TAG, *options.tags],
        "private_ip": False,
        "backups_enabled": False,
    }
    if spec.startup_script:
        size = len(spec.startup_script.encode())
        body["metadata"] = {"user_data": f"<base64 of the {size}-byte startup script>"}
    return body


class LinodeProvider(Provider):
    """Linode GPU instances (Quadro RTX 6000, RTX 4000 Ada) through libcloud."""

    name = "linode"
    description = "Linode (Akamai) GPU plans: RTX 6000, RTX 4000 Ada (stopped Linodes still bill)"
    default_ssh_user = "root"

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
        self._apis: dict[tuple[str, str | None], LinodeApi] = {}

    # ------------------------------------------------------------ options
    def validate_options(self, table: Mapping[str, Any], where: str) -> LinodeOptions:
        return parse_options(table, where)

    def apply_overrides(self, options: Any, overrides: Mapping[str, Any]) -> LinodeOptions:
        return with_overrides(_options(options), overrides)

    def gpu_request(self, options: Any) -> GpuRequest | None:
        return _options(options).gpu

    def ssh_user(self, options: Any) -> str:
        return _options(options).ssh_user

    def redacted_options(self, options: Any) -> Mapping[str, Any]:
        return _options(options).as_dict()

    def plan(self, spec: LaunchSpec) -> Sequence[PlannedRequest]:
        options = _options(spec.options)
        first = options.regions[0] if options.regions else options.region
        return [
            PlannedRequest("GET", "/v4/regions"),
            PlannedRequest("GET", "/v4/linode/types"),
            PlannedRequest("GET", "/v4/linode/instances"),
            PlannedRequest("POST", "/v4/linode/instances", create_body(spec, options, first)),
            PlannedRequest("GET", "/v4/linode/instances/<id>"),
        ]

    # ------------------------------------------------------------ API
    def _api(self, api_endpoint: str, token_file: str | None) -> LinodeApi:
        key = (api_endpoint, token_file)
        api = self._apis.get(key)
        if api is None:
            driver = build_driver(load_token(token_file), api_endpoint)
            api = LinodeApi(driver, deadline_s=self.retry_deadline_s, sleep=self._sleep)
            self._apis[key] = api
        return api

    def _api_for(self, options: LinodeOptions) -> LinodeApi:
        return self._api(options.api_endpoint, options.token_file)

    def _api_of(self, record: InstanceRecord) -> LinodeApi:
        endpoint = record.extra.get("api_endpoint")
        if not endpoint:
            raise NotFound(f"linode: the record of {record.name} names no API endpoint")
        return self._api(str(endpoint), record.extra.get("token_file"))

    def _regions(self, api: LinodeApi) -> Sequence[Any]:
        locations: Sequence[Any] = api.call(api.driver.list_locations, context="listing regions")
        return locations

    def _size(self, api: LinodeApi, options: LinodeOptions) -> Any:
        sizes = api.call(api.driver.list_sizes, context="listing plans")
        for size in sizes:
            if size.id == options.plan:
                return size
        raise ProfileError(
            f"linode has no plan {options.plan!r}",
            hint="see `linode-cli linodes types` for the plan ids",
        )

    # ------------------------------------------------------------ zones
    def preflight(self, spec: LaunchSpec) -> None:
        """The token works (listing regions), and the plan exists."""
        options = _options(spec.options)
        api = self._api_for(options)
        self._regions(api)
        self._size(api, options)

    def candidate_zones(self, spec: LaunchSpec) -> Sequence[str]:
        """`regions` as listed, else every region that sells GPU Linodes (for a GPU plan),
        `region` first and the rest by name."""
        options = _options(spec.options)
        if options.regions:
            return list(options.regions)
        locations = self._regions(self._api_for(options))
        usable = [
            loc.id
            for loc in locations
            if loc.extra.get("status", "ok") == "ok"
            and (options.gpu is None or GPU_CAPABILITY in loc.extra.get("capabilities", []))
        ]
        return sorted(usable, key=lambda region: (region != options.region, region))

    def region_of(self, zone: str, options: Any) -> str:
        return zone

    # ------------------------------------------------------------ life cycle
    def create(self, spec: LaunchSpec, zone: str) -> InstanceRecord:
        from libcloud.compute.base import NodeImage

        options = _options(spec.options)
        api = self._api_for(options)
        location = next((loc for loc in self._regions(api) if loc.id == zone), None)
        if location is None:
            raise CapacityError(f"linode has no region {zone}", zone=zone)
        size = self._size(api, options)
        image = NodeImage(id=options.image, name=options.image, driver=api.driver)
        node = api.call(
            lambda: api.driver.create_node(
                location=location,
                name=label_for(spec.name),
                size=size,
                image=image,
                root_pass=secrets.token_urlsafe(32),
                ex_authorized_keys=[spec.ssh_public_key.strip()],
                ex_tags=[TAG, *options.tags],
                ex_userdata=spec.startup_script,
            ),
            context=f"creating {spec.name} in {zone}",
            region=zone,
        )
        node = self._wait(api, str(node.id), p.RUNNING)
        return self._record(spec.name, node, options)

    def _get_node(self, api: LinodeApi, node_id: str) -> Any:
        return api.call(lambda: api.driver.ex_get_node(node_id), context=f"reading {node_id}")

    def _wait(self, api: LinodeApi, node_id: str, want: str) -> Any:
        deadline = time.monotonic() + self.wait_timeout_s
        delay = 0.5
        while True:
            node = self._get_node(api, node_id)
            state = STATES.get(str(node.state), p.UNKNOWN)
            if state == want and (want != p.RUNNING or node.public_ips):
                return node
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"linode {node_id} is still {state} after "
                    f"{self.wait_timeout_s:.0f}s (waiting for {want})"
                )
            self._sleep(delay)
            delay = min(delay * 1.6, 5.0)

    def _record(self, name: str, node: Any, options: LinodeOptions) -> InstanceRecord:
        return InstanceRecord(
            name=name,
            provider=self.name,
            zone=node.extra.get("location"),
            cloud_id=str(node.id),
            status=STATES.get(str(node.state), p.UNKNOWN),
            address=node.public_ips[0] if node.public_ips else None,
            ssh_user=options.ssh_user,
            ssh_port=options.ssh_port,
            extra={
                "api_endpoint": options.api_endpoint,
                "token_file": options.token_file,
                "plan": options.plan,
            },
        )

    def _refresh(self, record: InstanceRecord, node: Any) -> InstanceRecord:
        return InstanceRecord(
            name=record.name,
            provider=record.provider,
            zone=node.extra.get("location") or record.zone,
            cloud_id=record.cloud_id,
            status=STATES.get(str(node.state), p.UNKNOWN),
            address=node.public_ips[0] if node.public_ips else None,
            ssh_user=record.ssh_user,
            ssh_port=record.ssh_port,
            extra=dict(record.extra),
        )

    def get(self, record: InstanceRecord) -> InstanceRecord:
        if not record.cloud_id:
            raise NotFound(f"linode: {record.name} has no id")
        return self._refresh(record, self._get_node(self._api_of(record), record.cloud_id))

    def start(self, record: InstanceRecord) -> InstanceRecord:
        api = self._api_of(record)
        node = self._get_node(api, str(record.cloud_id))
        if STATES.get(str(node.state)) == p.STOPPING:
            node = self._wait(api, str(record.cloud_id), p.STOPPED)
        if STATES.get(str(node.state)) == p.STOPPED:
            api.call(lambda: api.driver.start_node(node), context=f"booting {record.name}")
        return self._refresh(record, self._wait(api, str(record.cloud_id), p.RUNNING))

    def stop(self, record: InstanceRecord) -> None:
        """Shut the Linode down (Linode keeps billing it until `destroy`)."""
        api = self._api_of(record)
        node = self._get_node(api, str(record.cloud_id))
        if STATES.get(str(node.state)) == p.STOPPED:
            return
        api.call(lambda: api.driver.stop_node(node), context=f"shutting down {record.name}")
        self._wait(api, str(record.cloud_id), p.STOPPED)

    def destroy(self, record: InstanceRecord) -> None:
        if not record.cloud_id:
            return
        api = self._api_of(record)
        try:
            node = self._get_node(api, record.cloud_id)
            api.call(lambda: api.driver.destroy_node(node), context=f"deleting {record.name}")
        except NotFound:
            return

    def _ours(self, options: LinodeOptions) -> Sequence[Any]:
        api = self._api_for(options)
        nodes: Sequence[Any] = api.call(api.driver.list_nodes, context="listing Linodes")
        return [n for n in nodes if TAG in (n.extra.get("tags") or [])]

    def find(self, spec: LaunchSpec) -> InstanceRecord | None:
        options = _options(spec.options)
        label = label_for(spec.name)
        found = [n for n in self._ours(options) if n.name == label]
        return self._record(spec.name, found[0], options) if found else None
