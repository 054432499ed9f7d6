"""Orchestrate's provider contract on Linode's v4 API; each region is a zone of the failover."""

import base64
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import CapacityError, ProfileError
from orchestrate.core.api.httpapi import HttpRefused, JsonApi, token_from
from orchestrate.core.api.optionchecks import endpoint, integer, string, string_list
from orchestrate.core.api.retry import Retry
from orchestrate.core.api.typedoptions import checked

GPUS = {  # --gpu name: plan for N GPUs, GPU name, model, GB, USD/h per GPU (Linode, 2024)
    "rtx6000": ("g1-gpu-rtx6000-{}", "nvidia-quadro-rtx-6000", "Quadro RTX 6000 (TU102)", 24, 1.5),
    "rtx4000-ada": ("g2-gpu-rtx4000a{}-s", "nvidia-rtx-4000-ada", "RTX 4000 Ada (AD104)", 20, 0.52),
}
OFFERS = [p.GpuOffer(g[1], g[2], g[3] * n, g[0].format(n), n, g[4] * n)
          for g in GPUS.values() for n in (1, 2, 4)]  # fmt: skip
PRICES = {"g6-standard-2": 0.036} | {o.machine_type: o.on_demand for o in OFFERS}
PLAN = string(re.compile(f"^({'|'.join(PRICES)})$"), f"one of {', '.join(PRICES)}")
REGION = string(re.compile(r"^[a-z]{2}-[a-z]+(?:-\d+)?$"), "a Linode region like us-east")
STATES = {"running": p.RUNNING, "offline": p.STOPPED, "shutting_down": p.STOPPING}
HINT = "make a token at https://cloud.linode.com/profile/tokens; export LINODE_TOKEN"


@dataclass(frozen=True)
class LinodeOptions:
    region: str = checked("us-east", REGION)
    regions: tuple[str, ...] = checked((), string_list(REGION))  # default: all with GPUs
    plan: str = checked("g1-gpu-rtx6000-1", PLAN)
    image: str = "linode/ubuntu22.04"
    token_file: str | None = None  # a path; else LINODE_TOKEN from the environment
    api_endpoint: str = checked("https://api.linode.com", endpoint)
    tags: tuple[str, ...] = ()
    ssh_user: str = "root"
    ssh_port: int = checked(22, integer(1, 65535))


def plan_for_gpu(text: str) -> str:  # --gpu rtx6000[:N], rtx4000-ada[:N], none (a CPU plan)
    name, _, count = text.strip().lower().partition(":")
    if name in ("none", "") or count == "0":
        return "g6-standard-2"
    if name not in GPUS or (count or "1") not in ("1", "2", "4"):
        raise ProfileError(f"--gpu: Linode has no plan with {text!r}", hint="e.g. rtx6000:2")
    return GPUS[name][0].format(count or "1")


def create_body(spec: p.LaunchSpec, region: str, secret: str, keys: list[str], data: str) -> Any:
    """`create`'s request, and --dry-run's with placeholders; labels become k=v tags."""
    o, meta = spec.options, {"metadata": {"user_data": data}} if spec.startup_script else {}
    tags = ["orchestrate", *o.tags, *(f"{k}={v}" for k, v in spec.labels.items())]
    return dict(region=region, type=o.plan, image=o.image, root_pass=secret, tags=tags,
                label=f"orchestrate-{spec.name}"[:64], authorized_keys=keys, **meta)  # fmt: skip


class LinodeProvider(p.Provider):
    name = "linode"
    description = "Linode (Akamai) GPU plans: RTX 6000, RTX 4000 Ada (stopped Linodes still bill)"
    options_class = LinodeOptions
    retry = Retry(deadline_s=60.0, first_s=0.25, max_s=8.0)  # tests give theirs a no-op sleep

    def api(self, o: LinodeOptions) -> JsonApi:
        token = token_from(o.token_file, ["LINODE_TOKEN"], "linode", HINT)
        auth = {"Authorization": f"Bearer {token}"}
        return JsonApi("linode", o.api_endpoint + "/v4", auth, HINT, self.retry)

    def apply_overrides(self, o: LinodeOptions, overrides: Mapping[str, Any]) -> Any:
        if "zone" in overrides:
            o = replace(o, region=REGION(overrides["zone"], "--zone"), regions=(overrides["zone"],))
        if "gpu" in overrides:
            o = replace(o, plan=plan_for_gpu(str(overrides["gpu"])))
        return super().apply_overrides(o, {**overrides, "zone": None, "gpu": None})

    def gpu_request(self, o: LinodeOptions) -> p.GpuRequest | None:
        found = [p.GpuRequest(f.gpu, f.count) for f in OFFERS if f.machine_type == o.plan]
        return found[0] if found else None

    def ssh_user(self, o: LinodeOptions) -> str:
        return o.ssh_user

    def price_query(self, o: LinodeOptions) -> p.PriceQuery:
        return p.PriceQuery(o.plan, self.gpu_request(o))

    def price(self, query: p.PriceQuery) -> float | None:  # with gpu_offers: `p.OwnPrices`
        return PRICES.get(query.machine_type)

    def gpu_offers(self) -> Sequence[p.GpuOffer]:
        return OFFERS

    def plan(self, spec: p.LaunchSpec) -> Sequence[p.PlannedRequest]:
        keys = [f"<{spec.ssh_public_key.split()[0]} public key>"]
        data = f"<base64 of {len(spec.startup_script or '')} bytes>"
        region = (spec.options.regions or [spec.options.region])[0]
        body = create_body(spec, region, "<random, never stored>", keys, data)
        return [p.PlannedRequest("GET", "/v4/regions"),
                p.PlannedRequest("POST", "/v4/linode/instances", body)]  # fmt: skip

    def candidate_zones(self, spec: p.LaunchSpec) -> Sequence[str]:
        o, kind = spec.options, "GPU Linodes" if self.gpu_request(spec.options) else "Linodes"
        found = self.api(o).call("GET", "/regions", context="listing regions")["data"]
        usable = [r["id"] for r in found if kind in r.get("capabilities", [])]
        return list(o.regions) or sorted(usable, key=lambda r: (r != o.region, r))  # `region` first

    def create(self, spec: p.LaunchSpec, zone: str) -> p.InstanceRecord:
        data = base64.b64encode((spec.startup_script or "").encode()).decode()
        body = create_body(spec, zone, secrets.token_urlsafe(32), [spec.ssh_public_key], data)
        api, where = self.api(spec.options), f"creating {spec.name} in {zone}"
        try:
            node = api.call("POST", "/linode/instances", body, context=where)
        except HttpRefused as exc:  # a 400 naming the region or the plan: try the next region
            errors = exc.document.get("errors", []) if isinstance(exc.document, dict) else []
            if exc.status == 400 and any(e.get("field") in ("region", "type") for e in errors):
                raise CapacityError(exc.message, zone=zone) from None
            raise
        return self.record(node, spec.options)  # still provisioning: core polls `get`

    def record(self, node: Mapping[str, Any], o: LinodeOptions) -> p.InstanceRecord:
        labels = dict(t.split("=", 1) for t in node.get("tags", []) if "=" in t)
        status, address = STATES.get(node.get("status", ""), p.PENDING), node.get("ipv4", [None])[0]
        return p.InstanceRecord(labels.get(p.NAME_LABEL, ""), self.name, node.get("region"),
                                str(node["id"]), status, address, o.ssh_user, o.ssh_port,
                                labels=labels)  # fmt: skip

    def call(self, record: p.InstanceRecord, method: str, action: str = "") -> Any:
        path = f"/linode/instances/{record.cloud_id}" + (f"/{action}" if action else "")
        return self.api(record.options).call(method, path, context=f"{method} {record.name}")

    def get(self, record: p.InstanceRecord) -> p.InstanceRecord:
        return self.record(self.call(record, "GET"), record.options)

    def start(self, record: p.InstanceRecord) -> p.InstanceRecord:
        if self.get(record).status == p.STOPPED:
            self.call(record, "POST", "boot")
        return replace(record, status=p.PENDING)  # core polls `get` until it runs

    def stop(self, record: p.InstanceRecord) -> None:
        if self.get(record).status != p.STOPPED:
            self.call(record, "POST", "shutdown")
            self.retry.poll(lambda: self.get(record), lambda r: r.status == p.STOPPED)

    def destroy(self, record: p.InstanceRecord) -> None:
        self.call(record, "DELETE")  # gone already: `NotFound`, which core's `down` accepts

    def list(self, o: LinodeOptions) -> Sequence[p.InstanceRecord]:
        nodes = self.api(o).call("GET", "/linode/instances", context="listing Linodes")["data"]
        return [self.record(n, o) for n in nodes if "orchestrate" in n.get("tags", [])]
