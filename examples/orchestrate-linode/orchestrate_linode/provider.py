"""`LinodeProvider`: orchestrate's provider contract (v2) on Linode (Akamai) through libcloud.

Linode has regions, no zones: each region is a "zone" of orchestrate's failover loop. A
Linode gets the user's key in root's ``authorized_keys`` (and a random root password that
Linode requires, never stored or shown), the tag ``orchestrate`` and orchestrate's labels as
``key=value`` tags, by which core's default `find` recognises it after a crash. `create`
returns the Linode while it is still provisioning: core polls `get` until it runs.
A powered-off Linode still bills; only `down` ends the bill (the description says so).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import NotFound, ProfileError
from orchestrate.core.api.retry import Retry

from orchestrate_linode.api import LinodeApi, build_driver, load_token
from orchestrate_linode.options import REGION, LinodeOptions, plan_for_gpu

STATES = {"running": p.RUNNING, "stopped": p.STOPPED, "stopping": p.STOPPING}  # else PENDING


def label_for(name: str) -> str:
    return f"orchestrate-{name}"[:64]  # core's names are [a-z][-a-z0-9]*: valid labels


def create_body(spec: p.LaunchSpec, options: LinodeOptions, region: str) -> dict[str, Any]:
    """``POST /v4/linode/instances`` as `create` sends it, for --dry-run: secrets elided."""
    body: dict[str, Any] = {
        "region": region, "type": options.plan, "image": options.image,
        "label": label_for(spec.name), "root_pass": "<random, never stored>",
        "authorized_keys": [f"<{spec.ssh_public_key.split()[0]} public key>"],
        "tags": tags_for(spec, options),
    }  # fmt: skip
    if spec.startup_script:
        body["metadata"] = {"user_data": f"<base64 of {len(spec.startup_script)} bytes>"}
    return body


def tags_for(spec: p.LaunchSpec, options: LinodeOptions) -> list[str]:
    return ["orchestrate", *options.tags, *(f"{k}={v}" for k, v in spec.labels.items())]


class LinodeProvider(p.Provider):
    name = "linode"
    description = "Linode (Akamai) GPU plans: RTX 6000, RTX 4000 Ada (stopped Linodes still bill)"
    default_ssh_user = "root"
    options_class = LinodeOptions

    def __init__(self, *, sleep: Callable[[float], object] = time.sleep) -> None:
        self.retry = Retry(deadline_s=60.0, first_s=0.25, max_s=8.0, sleep=sleep)
        self._apis: dict[tuple[str, str | None], LinodeApi] = {}

    def apply_overrides(self, options: LinodeOptions, overrides: Mapping[str, Any]) -> Any:
        if "zone" in overrides:
            region = REGION(overrides["zone"], "--zone")
            options = replace(options, region=region, regions=(region,))
        if "gpu" in overrides:
            options = replace(options, plan=plan_for_gpu(str(overrides["gpu"])))
        return super().apply_overrides(options, {k: v for k, v in overrides.items()
                                                 if k not in ("zone", "gpu")})  # fmt: skip

    def gpu_request(self, options: LinodeOptions) -> p.GpuRequest | None:
        return options.gpu

    def ssh_user(self, options: LinodeOptions) -> str:
        return options.ssh_user

    def plan(self, spec: p.LaunchSpec) -> Sequence[p.PlannedRequest]:
        body = create_body(spec, spec.options, (spec.options.regions or [spec.options.region])[0])
        return [p.PlannedRequest("GET", "/v4/regions"), p.PlannedRequest("GET", "/v4/linode/types"),
                p.PlannedRequest("POST", "/v4/linode/instances", body)]  # fmt: skip

    def _api(self, options: LinodeOptions) -> LinodeApi:
        key = (options.api_endpoint, options.token_file)
        if key not in self._apis:
            driver = build_driver(load_token(options.token_file), options.api_endpoint)
            self._apis[key] = LinodeApi(driver, self.retry)
        return self._apis[key]

    def _size(self, api: LinodeApi, plan: str) -> Any:
        for size in api.call(api.driver.list_sizes, context="listing plans"):
            if size.id == plan:
                return size
        raise ProfileError(f"linode has no plan {plan!r}", hint="see `linode-cli linodes types`")

    def preflight(self, spec: p.LaunchSpec) -> None:
        self._size(self._api(spec.options), spec.options.plan)  # the token and the plan work

    def candidate_zones(self, spec: p.LaunchSpec) -> Sequence[str]:
        """`regions` as listed, else every region selling this plan's kind, `region` first."""
        options, api = spec.options, self._api(spec.options)
        if options.regions:
            return list(options.regions)
        found = api.call(api.driver.list_locations, context="listing regions")
        wanted = "GPU Linodes" if options.gpu else "Linodes"
        usable = [r.id for r in found if wanted in r.extra.get("capabilities", [])]
        return sorted(usable, key=lambda region: (region != options.region, region))

    def create(self, spec: p.LaunchSpec, zone: str) -> p.InstanceRecord:
        from libcloud.compute.base import NodeImage, NodeLocation

        options, api = spec.options, self._api(spec.options)
        size = self._size(api, options.plan)  # outside the call below: it holds the lock
        node = api.call(lambda: api.driver.create_node(
            location=NodeLocation(zone, zone, "", api.driver), name=label_for(spec.name),
            size=size, root_pass=secrets.token_urlsafe(32),
            image=NodeImage(options.image, options.image, api.driver),
            ex_authorized_keys=[spec.ssh_public_key.strip()], ex_tags=tags_for(spec, options),
            ex_userdata=spec.startup_script,
        ), context=f"creating {spec.name} in {zone}", region=zone)  # fmt: skip
        return self._record(spec.name, node, options)

    def _record(self, name: str, node: Any, options: LinodeOptions) -> p.InstanceRecord:
        tags = [t.partition("=") for t in node.extra.get("tags") or [] if "=" in t]
        return p.InstanceRecord(
            name, self.name, node.extra.get("location"), str(node.id),
            STATES.get(str(node.state), p.PENDING), (node.public_ips or [None])[0],
            options.ssh_user, options.ssh_port, labels={k: v for k, _, v in tags},
            options=options,
        )  # fmt: skip

    def _node(self, record: p.InstanceRecord) -> tuple[LinodeApi, Any]:
        api = self._api(record.options)
        get = lambda: api.driver.ex_get_node(record.cloud_id)  # noqa: E731
        return api, api.call(get, context=f"reading {record.name}")

    def get(self, record: p.InstanceRecord) -> p.InstanceRecord:
        return self._record(record.name, self._node(record)[1], record.options)

    def start(self, record: p.InstanceRecord) -> p.InstanceRecord:
        api, node = self._node(record)
        if STATES.get(str(node.state)) == p.STOPPED:
            api.call(lambda: api.driver.start_node(node), context=f"booting {record.name}")
        return replace(record, status=p.PENDING)  # core polls `get` until it runs

    def stop(self, record: p.InstanceRecord) -> None:
        api, node = self._node(record)
        if STATES.get(str(node.state)) != p.STOPPED:
            api.call(lambda: api.driver.stop_node(node), context=f"stopping {record.name}")
            self.retry.poll(lambda: self.get(record), lambda r: r.status == p.STOPPED)

    def destroy(self, record: p.InstanceRecord) -> None:
        try:
            api, node = self._node(record)
            api.call(lambda: api.driver.destroy_node(node), context=f"deleting {record.name}")
        except NotFound:
            return

    def list(self, options: LinodeOptions) -> Sequence[p.InstanceRecord]:
        api = self._api(options)
        nodes = api.call(api.driver.list_nodes, context="listing Linodes")
        ours = [self._record("", n, options) for n in nodes if "orchestrate" in n.extra["tags"]]
        return [replace(r, name=r.labels.get(p.NAME_LABEL, "")) for r in ours]
