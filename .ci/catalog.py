"""Regenerate ``core/api/data/gpu_catalog.json`` from a snapshot of a public GPU catalog,
and the prices it has in ``core/money/data/prices.toml`` (reference region of each section).

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


PRICES = ROOT / "core" / "money" / "data" / "prices.toml"
#: The reference region of each provider section of prices.toml.
PRICE_REGIONS = {"gcp": "us-central1", "aws": "us-east-1"}
_SECTION = re.compile(r'^\[(gcp|aws)(?:\.(machines|gpus)\.("?)([^"\]]+)\3)?\]\s*$')
_KEY = re.compile(r"^(on_demand|spot|regions|date|source) = ")


def _reference_prices(data: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(provider, kind, name) -> the prices.toml values the snapshot gives for it, in the
    reference region (GCE: cheapest zone of the region; EC2: the region's row)."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    region = PRICE_REGIONS["gcp"]
    gcp_data = data["gcp"]

    def in_region(zones: dict[str, list[Any]]) -> tuple[Any, Any] | None:
        rows = [v for z, v in zones.items() if z.rsplit("-", 1)[0] == region]
        if not rows:
            return None
        spots = [r[1] for r in rows if r[1] is not None]
        return min(r[0] for r in rows if r[0] is not None), (min(spots) if spots else None)

    for name, entry in gcp_data["accelerators"].items():
        values: dict[str, Any] = {
            "regions": sorted(
                {z.rsplit("-", 1)[0] for z in entry["zones"]}, key=lambda r: (r[:3] != "us-", r)
            ),
        }
        price = in_region(entry["zones"])
        if price:
            values["on_demand"], values["spot"] = price
        out[("gcp", "gpus", name)] = values
    for name, entry in {**gcp_data["hosts"], **gcp_data["machine_types"]}.items():
        price = in_region(entry["zones"])
        if price:
            out[("gcp", "machines", name)] = {"on_demand": price[0], "spot": price[1]}
    for name, entry in data["aws"]["instance_types"].items():
        row = entry["regions"].get(PRICE_REGIONS["aws"])
        if row and row[0] is not None:
            out[("aws", "machines", name)] = {"on_demand": row[0], "spot": row[1]}
    return out


def update_prices(data: dict[str, Any]) -> int:
    """Rewrite the prices of core/money/data/prices.toml that the snapshot has, in place;
    rows it lacks (other families, disks, retired types) keep their hand-written values."""
    source = data["source"]
    facts = _reference_prices(data)
    current: tuple[str, str, str] | None = None
    changed = 0
    lines = PRICES.read_text().splitlines()
    for index, line in enumerate(lines):
        section = _SECTION.match(line)
        if section:
            current = (section.group(1), section.group(2) or "", section.group(4) or "")
            continue
        key = _KEY.match(line)
        if current is None or key is None:
            continue
        provider, kind, _ = current
        value: Any = None
        if not kind and key.group(1) == "date":
            value = source["date"]
        elif not kind and key.group(1) == "source":
            value = (
                f"{source['repository']}/blob/{source[provider + '_commit']}"
                f"/catalogs/v7/{provider}/vms.csv"
            )
        elif kind:
            value = facts.get(current, {}).get(key.group(1))
        if value is None:
            continue
        text = json.dumps(value) if not isinstance(value, float) else f"{value:.4f}"
        lines[index] = f"{key.group(1)} = {text}"
        changed += 1
    PRICES.write_text("\n".join(lines) + "\n")
    return changed


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
    print(f"updated {update_prices(data)} values in {PRICES.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
