"""EC2 instance types as data: which NVIDIA GPU each one carries, and which vCPU quota it eats.

On EC2 the GPU is not a separate request as on GCE: it comes with the instance type
(``g4dn.xlarge`` is one Tesla T4). So the GPU a profile asks for is derived from
``instance_type`` through this table, and ``--gpu`` maps the other way, to the smallest type
carrying that GPU and count.

Sources: the "Accelerated computing" tables of https://aws.amazon.com/ec2/instance-types/ and
https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html (GPU model and count, vCPUs).
vCPU quota codes: https://docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html
and the Service Quotas console (service code ``ec2``).

GPU names follow GCE's accelerator names where one exists, so ``--gpu nvidia-tesla-t4`` means
the same card on every provider.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: NVIDIA model (canonical name) -> accepted short forms for ``--gpu``.
GPU_NAMES: dict[str, tuple[str, ...]] = {
    "nvidia-tesla-k80": ("k80", "tesla-k80"),
    "nvidia-tesla-m60": ("m60", "tesla-m60"),
    "nvidia-tesla-v100": ("v100", "tesla-v100"),
    "nvidia-tesla-t4": ("t4", "tesla-t4"),
    "nvidia-a10g": ("a10g",),
    "nvidia-l4": ("l4",),
    "nvidia-l40s": ("l40s",),
    "nvidia-tesla-a100": ("a100", "tesla-a100", "a100-40gb"),
    "nvidia-a100-80gb": ("a100-80gb",),
    "nvidia-h100-80gb": ("h100", "h100-80gb"),
}
_ALIASES = {alias: name for name, aliases in GPU_NAMES.items() for alias in (name, *aliases)}


@dataclass(frozen=True)
class InstanceType:
    """One EC2 instance type with an NVIDIA GPU."""

    name: str
    gpu: str
    gpus: int
    vcpus: int


def _family(gpu: str, rows: tuple[tuple[str, int, int], ...], family: str) -> list[InstanceType]:
    return [InstanceType(f"{family}.{size}", gpu, gpus, vcpus) for size, gpus, vcpus in rows]


_T4 = (
    ("xlarge", 1, 4),
    ("2xlarge", 1, 8),
    ("4xlarge", 1, 16),
    ("8xlarge", 1, 32),
    ("16xlarge", 1, 64),
    ("12xlarge", 4, 48),
    ("metal", 8, 96),
)
_SIZES_1_4_8 = (
    ("xlarge", 1, 4),
    ("2xlarge", 1, 8),
    ("4xlarge", 1, 16),
    ("8xlarge", 1, 32),
    ("16xlarge", 1, 64),
    ("12xlarge", 4, 48),
    ("24xlarge", 4, 96),
    ("48xlarge", 8, 192),
)

#: Every GPU type orchestrate knows, smallest first within a family (the order `--gpu` uses).
GPU_TYPES: tuple[InstanceType, ...] = tuple(
    [
        *_family("nvidia-tesla-t4", _T4, "g4dn"),
        *_family("nvidia-a10g", _SIZES_1_4_8, "g5"),
        *_family("nvidia-l4", _SIZES_1_4_8, "g6"),
        *_family("nvidia-l40s", _SIZES_1_4_8, "g6e"),
        InstanceType("p4d.24xlarge", "nvidia-tesla-a100", 8, 96),
        InstanceType("p4de.24xlarge", "nvidia-a100-80gb", 8, 96),
        InstanceType("p5.48xlarge", "nvidia-h100-80gb", 8, 192),
    ]
)
BY_NAME: dict[str, InstanceType] = {t.name: t for t in GPU_TYPES}

#: Families EC2 retired: P2 (K80) in 2024, P3 (V100) and G3 (M60) in 2025; by mid-2026
#: DescribeInstanceTypes no longer lists p3. Each names the family to use instead.
#: Source: https://aws.amazon.com/ec2/previous-generation/ and the EC2 retirement notices.
RETIRED_FAMILIES: dict[str, tuple[str, str]] = {
    "p2": ("2024", "g4dn.xlarge (T4), or g5/g6 (A10G, L4)"),
    "p3": ("2025", "g5.xlarge (A10G) or g6.xlarge (L4); p4d/p5 for 8 GPUs"),
    "p3dn": ("2025", "p4d.24xlarge (8 x A100)"),
    "g3": ("2025", "g4dn.xlarge (T4)"),
    "g3s": ("2025", "g4dn.xlarge (T4)"),
}
#: GPUs only retired families carried, and the family that carried them.
RETIRED_GPUS: dict[str, str] = {
    "nvidia-tesla-k80": "p2",
    "nvidia-tesla-v100": "p3",
    "nvidia-tesla-m60": "g3",
}


def retired_message(instance_type: str, where: str) -> str | None:
    """One line naming the retirement and the successor, or None for a current type."""
    family = family_of(instance_type)
    if family not in RETIRED_FAMILIES:
        return None
    year, instead = RETIRED_FAMILIES[family]
    return f"{where}: EC2 retired {family} instances in {year}; use {instead}"


GPU_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(t.name.split(".")[0] for t in GPU_TYPES))
#: What `--gpu none` picks: a small general-purpose type for a CPU notebook host.
CPU_DEFAULT = "t3.large"

_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
#: Accelerated families start with p or g and a generation digit (p2, g4dn, g6e ...).
_GPU_LOOKING = re.compile(r"^[pg]\d")
#: Graviton families have a "g" right after the generation digit (t4g, m6gd, c7gn, g5g).
_GRAVITON = re.compile(r"^[a-z]+\d+g[a-z]*$")


def family_of(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def is_instance_type(text: str) -> bool:
    return bool(_TYPE.match(text))


def gpu_of(instance_type: str) -> InstanceType | None:
    """The GPU row of `instance_type`, or None for a CPU type.

    Raises `KeyError` for a p*/g* type missing from the table: guessing its GPU would send a
    GPU host to the wrong driver, so an unknown accelerated type is refused instead.
    """
    row = BY_NAME.get(instance_type)
    if row is not None:
        return row
    family = family_of(instance_type)
    if family in GPU_FAMILIES or _GPU_LOOKING.match(family):
        raise KeyError(instance_type)
    return None


def architecture(instance_type: str) -> str:
    """The AMI architecture the type boots: ``arm64`` for Graviton families, else ``x86_64``."""
    return "arm64" if _GRAVITON.match(family_of(instance_type)) else "x86_64"


def canonical_gpu(name: str) -> str | None:
    """``k80``, ``tesla-k80`` or ``nvidia-tesla-k80`` -> ``nvidia-tesla-k80``; None if unknown."""
    return _ALIASES.get(name.strip().lower())


def smallest_type(gpu: str, count: int) -> InstanceType | None:
    """The smallest known type with exactly `count` of `gpu` (fewest vCPUs)."""
    rows = [t for t in GPU_TYPES if t.gpu == gpu and t.gpus == count]
    return min(rows, key=lambda t: t.vcpus) if rows else None


def counts_for(gpu: str) -> list[int]:
    return sorted({t.gpus for t in GPU_TYPES if t.gpu == gpu})


# ------------------------------------------------------------------ vCPU quotas
@dataclass(frozen=True)
class VcpuQuota:
    """The Service Quotas entry that limits how many vCPUs of a family may run in a region."""

    name: str
    code: str


_ON_DEMAND = {
    "P": VcpuQuota("Running On-Demand P instances", "L-417A185B"),
    "G": VcpuQuota("Running On-Demand G and VT instances", "L-DB2E81BA"),
    "Standard": VcpuQuota(
        "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "L-1216C47A"
    ),
}
_SPOT = {
    "P": VcpuQuota("All P Spot Instance Requests", "L-7212CCBC"),
    "G": VcpuQuota("All G and VT Spot Instance Requests", "L-3819A6DF"),
    "Standard": VcpuQuota(
        "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", "L-34B43A08"
    ),
}


def vcpu_quota(instance_type: str, *, spot: bool) -> VcpuQuota | None:
    """The vCPU quota `instance_type` counts against, or None for families not listed here."""
    family = family_of(instance_type)
    if family.startswith("p"):
        bucket = "P"
    elif family.startswith(("g", "vt")):
        bucket = "G"
    elif family[0] in "acdhimrtz":
        bucket = "Standard"
    else:
        return None
    return (_SPOT if spot else _ON_DEMAND)[bucket]


def vcpus_of(instance_type: str) -> int | None:
    row = BY_NAME.get(instance_type)
    return row.vcpus if row else None
