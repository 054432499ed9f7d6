"""Regenerate ``core/api/data/gpu_catalog.json`` from a snapshot of a public GPU catalog.

Run by hand when the snapshot is refreshed; the generated file is committed, so a user's
install never reads the network for it:

    python .ci/catalog.py [SNAPSHOT_DIR] [--date YYYY-MM-DD]

SNAPSHOT_DIR (default ``../shared/catalog`` next to the repository) holds ``gcp-gpus.csv``,
``gcp-hosts.csv``, ``aws-gpus.csv`` and ``SOURCE.md`` (which names the source repository and
the commits read). What this script decides, so the data file stays plain facts:

- GCE names: the catalog says ``T4``, the API says ``nvidia-tesla-t4`` (`GCE_NAMES`).
- GCE GPU-only rows (empty machine type) carry the per-GPU price and say in which zones an
  accelerator type is offered; a2/a3/g2 rows price the host part only and say which
  accelerator-optimized machine types exist in which zone, with how many GPUs.
- T4, V100, P100 and P4 attach to N1 machine types (`ATTACH_TO_N1`); every other GPU comes
  only with its accelerator-optimized machine types.
- EC2 on-demand prices are per region (constant across its zones); the spot price kept is the
  lowest of the region's zones.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "core" / "api" / "data" / "gpu_catalog.json"

GCE_NAMES = {
    "T4": "nvidia-tesla-t4",
    "V100": "nvidia-tesla-v100",
    "P100": "nvidia-tesla-p100",
    "P4": "nvidia-tesla-p4",
    "L4": "nvidia-l4",
    "A100": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "H100": "nvidia-h100-80gb",
    "H100-MEGA": "nvidia-h100-mega-80gb",
    "H200": "nvidia-h200-141gb",
    "B200": "nvidia-b200",
}
ATTACH_TO_N1 = ("T4", "V100", "P100", "P4")
#: a3-megagpu-8g carries the H100 Mega variant, which the catalog labels plain H100.
MACHINE_GPU_FIX = {"a3-megagpu-8g": "H100-MEGA"}
EC2_NAMES = {
    "T4": "nvidia-tesla-t4",
    "T4g": "nvidia-t4g",
    "A10G": "nvidia-a10g",
    "L4": "nvidia-l4",
    "L40S": "nvidia-l40s",
    "V100": "nvidia-tesla-v100",
    "V100-32GB": "nvidia-tesla-v100",
    "A100": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-a100-80gb",
    "H100": "nvidia-h100-80gb",
    "H200": "nvidia-h200-141gb",
}


def _price(text: str) -> float | None:
    return round(float(text), 6) if text.strip() else None


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _source(snapshot: Path) -> dict[str, str]:
    text = (snapshot / "SOURCE.md").read_text()
    repo = re.search(r"\*\*Repository:\*\* (\S+)", text)
    date = re.search(r"\*\*Date read:\*\* (\d{4}-\d{2}-\d{2})", text)
    commits = dict(re.findall(r"`catalogs/v7/(gcp|aws)/vms\.csv` \| `([0-9a-f]{40})`", text))
    if not (repo and date and len(commits) == 2):
        raise SystemExit(f"{snapshot}/SOURCE.md: repository, date or commits not found")
    return {
        "repository": repo.group(1),
        "date": date.group(1),
        "gcp_commit": commits["gcp"],
        "aws_commit": commits["aws"],
        "files": "catalogs/v7/gcp/vms.csv, catalogs/v7/aws/vms.csv",
    }


def gcp(snapshot: Path) -> dict[str, Any]:
    accelerators: dict[str, Any] = {}
    machines: dict[str, Any] = {}
    for row in _rows(snapshot / "gcp-gpus.csv"):
        count = int(float(row["gpu_count"]))
        price, spot = _price(row["price_hour"]), _price(row["spot_price_hour"])
        if not row["provider_machine_type"]:
            entry = accelerators.setdefault(
                GCE_NAMES[row["gpu"]],
                {
                    "catalog_name": row["gpu"],
                    "attach_to": ["n1"] if row["gpu"] in ATTACH_TO_N1 else [],
                    "counts": [],
                    "zones": {},
                },
            )
            if count not in entry["counts"]:
                entry["counts"] = sorted([*entry["counts"], count])
            per_gpu = [
                None if price is None else round(price / count, 6),
                None if spot is None else round(spot / count, 6),
            ]
            entry["zones"].setdefault(row["zone"], per_gpu)
            continue
        name = row["provider_machine_type"]
        gpu = MACHINE_GPU_FIX.get(name, row["gpu"])
        machine = machines.setdefault(
            name,
            {
                "gpu": GCE_NAMES[gpu],
                "gpus": count,
                "vcpus": float(row["vcpus"]),
                "memory_gib": float(row["memory_gib"]),
                "zones": {},
            },
        )
        machine["zones"][row["zone"]] = [price, spot]
    hosts: dict[str, Any] = {}
    for row in _rows(snapshot / "gcp-hosts.csv"):
        host = hosts.setdefault(
            row["machine_type"],
            {"vcpus": float(row["vcpus"]), "memory_gib": float(row["memory_gib"]), "zones": {}},
        )
        host["zones"][row["zone"]] = [_price(row["price_hour"]), _price(row["spot_price_hour"])]
    return {"accelerators": accelerators, "machine_types": machines, "hosts": hosts}


def aws(snapshot: Path) -> dict[str, Any]:
    types: dict[str, Any] = {}
    for row in _rows(snapshot / "aws-gpus.csv"):
        entry = types.setdefault(
            row["instance_type"],
            {
                "gpu": EC2_NAMES[row["gpu"]],
                "gpus": int(row["gpu_count"]),
                "vcpus": float(row["vcpus"]),
                "memory_gib": float(row["memory_gib"]),
                "regions": {},
            },
        )
        price, spot = _price(row["price_hour"]), _price(row["spot_price_hour"])
        old = entry["regions"].get(row["region"])
        if old is not None:
            price = old[0] if price is None else price
            spots = [s for s in (old[1], spot) if s is not None]
            spot = min(spots) if spots else None
        entry["regions"][row["region"]] = [price, spot]
    return {"instance_types": types}


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    snapshot = Path(args[0]) if args else ROOT.parent / "shared" / "catalog"
    data = {
        "about": "GPU offers and list prices (USD per hour), generated by .ci/catalog.py from "
        "a dated snapshot of a public catalog; not a quote. `orchestrate gpus --refresh` "
        "asks the live APIs instead.",
        "source": _source(snapshot),
        "gcp": gcp(snapshot),
        "aws": aws(snapshot),
    }
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
