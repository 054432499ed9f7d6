"""``[profiles.NAME.linode]``: an options dataclass, from which orchestrate derives the checks.

Defaults: the smallest GPU plan (one Quadro RTX 6000) on Ubuntu 22.04, every region that
sells GPU Linodes, ``us-east`` first. The GPU is read from the plan id, as EC2's from its
instance type. No libcloud here, so ``--dry-run`` and ``profiles`` stay light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.optionchecks import endpoint, integer, string, string_list
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.api.typedoptions import checked

REGION = string(re.compile(r"^[a-z]{2}-[a-z]+(?:-\d+)?$"), "a Linode region like us-east")
PLAN = string(re.compile(r"^g\d+-[a-z0-9-]+$"), "a Linode plan id like g1-gpu-rtx6000-1")
IMAGE = string(re.compile(r"^(linode|private)/[\w.-]+$"), "an image id like linode/ubuntu22.04")
GPU_PLANS = {"rtx6000": "g1-gpu-rtx6000-{n}", "rtx4000-ada": "g2-gpu-rtx4000a{n}-s"}
CPU_PLAN = "g6-standard-2"  # what --gpu none picks: a 4 GB shared-CPU plan
_GPU_OF_PLAN = re.compile(r"^g\d-gpu-(rtx6000-|rtx4000a)(\d)")


def _distinct(value: Any, where: str) -> tuple[str, ...]:
    regions: tuple[str, ...] = string_list(REGION)(value, where)
    if len(set(regions)) != len(regions):
        raise ProfileError(f"{where} lists a region twice")
    return regions


@dataclass(frozen=True)
class LinodeOptions:
    region: str = checked("us-east", REGION)
    regions: tuple[str, ...] = checked((), _distinct)
    plan: str = checked("g1-gpu-rtx6000-1", PLAN)
    image: str = checked("linode/ubuntu22.04", IMAGE)
    token_file: str | None = None  # a path; else LINODE_TOKEN from the environment
    api_endpoint: str = checked("https://api.linode.com", endpoint)
    tags: tuple[str, ...] = ()
    ssh_user: str = "root"
    ssh_port: int = checked(22, integer(1, 65535))

    @property
    def gpu(self) -> GpuRequest | None:
        match = _GPU_OF_PLAN.match(self.plan)
        if match is None:
            return None
        name = "nvidia-quadro-rtx-6000" if match[1] == "rtx6000-" else "nvidia-rtx-4000-ada"
        return GpuRequest(name, int(match[2]))


def plan_for_gpu(text: str) -> str:
    """``--gpu rtx6000[:N]``, ``rtx4000-ada[:N]`` or ``none`` -> the Linode plan."""
    name, _, count = text.strip().lower().partition(":")
    if name in ("none", "") or count == "0":
        return CPU_PLAN
    if name not in GPU_PLANS or (count or "1") not in ("1", "2", "4"):
        raise ProfileError(f"--gpu: Linode has no plan with {text!r}", hint="e.g. rtx6000:2")
    return GPU_PLANS[name].format(n=count or "1")
