"""The ``[profiles.NAME.linode]`` table, validated into `LinodeOptions` before any API call.

Defaults launch Linode's smallest GPU plan (``g1-gpu-rtx6000-1``: one Quadro RTX 6000) with
Ubuntu 22.04, trying every region that sells GPU Linodes, ``us-east`` (Newark) first.
The GPU a profile gets is derived from the plan through a naming rule, like EC2's instance
types: ``g1-gpu-rtx6000-N`` is N x RTX 6000, ``g2-gpu-rtx4000aN-SIZE`` is N x RTX 4000 Ada,
anything else has no GPU.

Only orchestrate's public API is used: `ProfileError` for bad input, `GpuRequest` for the
accelerator. No libcloud here, so ``--dry-run`` and ``profiles --show`` stay light.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.provider import GpuRequest

DEFAULT_ENDPOINT = "https://api.linode.com"
NO_GPU = "none"
#: What ``--gpu none`` picks: a shared-CPU 4 GB plan for a CPU notebook host.
CPU_PLAN = "g6-standard-2"

_REGION = re.compile(r"^[a-z]{2}-[a-z]+(?:-\d+)?$")
_PLAN = re.compile(r"^g\d+-[a-z0-9-]+$")
_IMAGE = re.compile(r"^(?:linode|private)/[A-Za-z0-9._-]+$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_TAG = re.compile(r"^[\x20-\x7e]{3,50}$")
_RTX6000 = re.compile(r"^g1-gpu-rtx6000-(\d)$")
_RTX4000 = re.compile(r"^g2-gpu-rtx4000a(\d)-[a-z]+$")
#: ``--gpu`` names -> the plan with one, two or four of them.
GPU_PLANS: dict[str, dict[int, str]] = {
    "nvidia-quadro-rtx-6000": {n: f"g1-gpu-rtx6000-{n}" for n in (1, 2, 3, 4)},
    "nvidia-rtx-4000-ada": {
        1: "g2-gpu-rtx4000a1-s",
        2: "g2-gpu-rtx4000a2-s",
        4: "g2-gpu-rtx4000a4-s",
    },
}
GPU_ALIASES = {
    "rtx6000": "nvidia-quadro-rtx-6000",
    "rtx-6000": "nvidia-quadro-rtx-6000",
    "quadro-rtx-6000": "nvidia-quadro-rtx-6000",
    "nvidia-quadro-rtx-6000": "nvidia-quadro-rtx-6000",
    "rtx4000-ada": "nvidia-rtx-4000-ada",
    "rtx-4000-ada": "nvidia-rtx-4000-ada",
    "nvidia-rtx-4000-ada": "nvidia-rtx-4000-ada",
}


def gpu_of_plan(plan: str) -> GpuRequest | None:
    """The GPU a Linode plan carries, from its id; None for CPU plans."""
    for pattern, name in ((_RTX6000, "nvidia-quadro-rtx-6000"), (_RTX4000, "nvidia-rtx-4000-ada")):
        match = pattern.match(plan)
        if match:
            return GpuRequest(name, int(match.group(1)))
    return None


@dataclass(frozen=True)
class LinodeOptions:
    """Validated options; `region` is tried first, then `regions` (or every GPU region)."""

    region: str = "us-east"
    regions: tuple[str, ...] = ()
    plan: str = "g1-gpu-rtx6000-1"
    image: str = "linode/ubuntu22.04"
    token_file: str | None = None
    api_endpoint: str = DEFAULT_ENDPOINT
    tags: tuple[str, ...] = ()
    ssh_user: str = "root"
    ssh_port: int = 22

    @property
    def gpu(self) -> GpuRequest | None:
        return gpu_of_plan(self.plan)

    def as_dict(self) -> dict[str, Any]:
        gpu = self.gpu
        return {
            "region": self.region,
            "regions": list(self.regions),
            "plan": self.plan,
            "gpu": f"{gpu.name}:{gpu.count}" if gpu else NO_GPU,
            "image": self.image,
            "token_file": self.token_file or "(LINODE_TOKEN from the environment)",
            "api_endpoint": self.api_endpoint,
            "tags": list(self.tags),
            "ssh_user": self.ssh_user,
            "ssh_port": self.ssh_port,
        }


def _string(value: Any, where: str, pattern: re.Pattern[str] | None = None, what: str = "") -> str:
    if not isinstance(value, str):
        raise ProfileError(f"{where} must be a string, not {type(value).__name__} {value!r}")
    if pattern is not None and not pattern.match(value):
        raise ProfileError(f"{where}: {value!r} is not {what}")
    return value


def _strings(value: Any, where: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ProfileError(f"{where} must be an array of strings")
    items = tuple(_string(v, f"{where}[{i}]", pattern, what) for i, v in enumerate(value))
    if len(set(items)) != len(items):
        raise ProfileError(f"{where} lists a value twice")
    return items


def _endpoint(value: Any, where: str) -> str:
    text = _string(value, where)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ProfileError(f"{where}: {text!r} must be scheme://host[:port] with no path")
    return text.rstrip("/")


def _port(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ProfileError(f"{where} must be a TCP port 1-65535, not {value!r}")
    return value


KEYS = (
    "region",
    "regions",
    "plan",
    "image",
    "token_file",
    "api_endpoint",
    "tags",
    "ssh_user",
    "ssh_port",
)


def parse_options(table: Mapping[str, Any], where: str) -> LinodeOptions:
    """Validate ``[profiles.NAME.linode]``; every error names `where` and the key."""
    values: dict[str, Any] = {}
    for key, raw in table.items():
        at = f"{where}: {key}"
        if key == "region":
            values[key] = _string(raw, at, _REGION, "a Linode region like us-east")
        elif key == "regions":
            values[key] = _strings(raw, at, _REGION, "a Linode region like us-east")
        elif key == "plan":
            values[key] = _string(raw, at, _PLAN, "a Linode plan id like g1-gpu-rtx6000-1")
        elif key == "image":
            values[key] = _string(raw, at, _IMAGE, "an image id like linode/ubuntu22.04")
        elif key == "token_file":
            values[key] = _string(raw, at)
        elif key == "api_endpoint":
            values[key] = _endpoint(raw, at)
        elif key == "tags":
            values[key] = _strings(raw, at, _TAG, "a tag of 3-50 printable characters")
        elif key == "ssh_user":
            values[key] = _string(raw, at, _USER, "a login name like root")
        elif key == "ssh_port":
            values[key] = _port(raw, at)
        else:
            raise ProfileError(
                f"{where}: unknown key {key!r}", hint=f"known keys: {', '.join(KEYS)}"
            )
    return LinodeOptions(**values)


def plan_for_gpu(text: str) -> str:
    """``--gpu NAME[:COUNT]`` or ``none`` -> the Linode plan that provides it."""
    value = text.strip().lower()
    if value in (NO_GPU, "", "0"):
        return CPU_PLAN
    name, _, count_text = value.partition(":")
    canonical = GPU_ALIASES.get(name)
    if canonical is None:
        raise ProfileError(
            f"--gpu: Linode sells no GPU called {name!r}", hint="known: " + ", ".join(GPU_PLANS)
        )
    if count_text and not count_text.isdigit():
        raise ProfileError(f"--gpu: {text!r}: the count after ':' must be a number")
    count = int(count_text) if count_text else 1
    if count == 0:
        return CPU_PLAN
    plans = GPU_PLANS[canonical]
    if count not in plans:
        raise ProfileError(
            f"--gpu: Linode has no plan with {count} x {canonical}",
            hint=f"counts: {', '.join(map(str, plans))}",
        )
    return plans[count]


def with_overrides(options: LinodeOptions, overrides: Mapping[str, Any]) -> LinodeOptions:
    """``--zone REGION`` tries that region only; ``--gpu`` picks the plan."""
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - {"zone", "gpu"})
    if unknown:
        raise ProfileError(f"provider linode does not take --{unknown[0].replace('_', '-')}")
    if "zone" in given:
        region = _string(given["zone"], "--zone", _REGION, "a Linode region like us-east")
        options = replace(options, region=region, regions=(region,))
    if "gpu" in given:
        options = replace(options, plan=plan_for_gpu(str(given["gpu"])))
    return options
