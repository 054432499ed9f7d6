"""The shipped price file (``orchestrate/core/money/data/prices.toml``) as typed tables.

Provider pricing APIs need credentials, are slow and differ per cloud, so the numbers come
from a data file shipped with the package: approximate public list prices for one reference
region per provider, each section carrying the date they were copied and the pages they came
from. This module only reads and checks that file (a malformed one is a bug in the shipped
data, which the tests catch); `orchestrate.core.money.prices` does the arithmetic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

#: ``gpu_billing`` values: GCE bills GPUs apart from the machine; EC2 machine prices include them.
SEPARATE = "separate"
INCLUDED = "included"


@dataclass(frozen=True)
class MachinePrice:
    """One machine type. ``gpus`` are the GPUs the type comes with (G2, A2, EC2 P/G types)."""

    name: str
    vcpus: float
    memory_gb: float
    on_demand: float
    spot: float | None
    gpus: Mapping[str, int] = field(default_factory=dict)
    #: set when the price was computed from family rates instead of read from the table
    derived: str = ""

    def price(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


@dataclass(frozen=True)
class FamilyRates:
    """Per-vCPU and per-GB rates of a GCE machine family, for custom and missing sizes."""

    name: str
    vcpu: float
    memory_gb: float
    spot_vcpu: float | None
    spot_memory_gb: float | None
    custom_premium: float
    shapes: Mapping[str, float]

    def price(self, vcpus: float, memory_gb: float, *, spot: bool, premium: float) -> float | None:
        if spot:
            if self.spot_vcpu is None or self.spot_memory_gb is None:
                return None
            return (vcpus * self.spot_vcpu + memory_gb * self.spot_memory_gb) * premium
        return (vcpus * self.vcpu + memory_gb * self.memory_gb) * premium


@dataclass(frozen=True)
class GpuPrice:
    """One GPU type as the provider names it. Prices are per GPU-hour, and only set where the
    provider bills GPUs separately; ``regions`` is where the data file says it is offered."""

    name: str
    model: str
    pci_id: str
    memory_gb: float
    on_demand: float | None
    spot: float | None
    regions: tuple[str, ...]
    note: str = ""

    def price(self, spot: bool) -> float | None:
        return self.spot if spot else self.on_demand


@dataclass(frozen=True)
class ProviderPrices:
    """One provider's section of the price file, with where and when the numbers are from."""

    name: str
    date: str
    sources: tuple[str, ...]
    region: str
    currency: str
    note: str
    gpu_billing: str
    default_disk: str | None
    hours_per_month: float
    minimum_seconds: float
    machines: Mapping[str, MachinePrice]
    families: Mapping[str, FamilyRates]
    gpus: Mapping[str, GpuPrice]
    disks: Mapping[str, float]

    @property
    def basis(self) -> str:
        """ "gcp list prices for us-central1 of 2025-01-15, approximate": said with every price."""
        return f"{self.name} list prices for {self.region} of {self.date}, approximate"

    def basis_for(self, regions: Sequence[str]) -> str:
        """`basis`, honest about where the instance runs: the file holds the reference
        region's prices only, so an instance bound for another region is told that its
        region may differ rather than shown prices that read as its own. Empty `regions`:
        the cloud picks the zone at create time, so the reference is all that is known."""
        others = [region for region in dict.fromkeys(regions) if region != self.region]
        if not regions:
            where = f"{self.region} (the price file's reference region; others may differ)"
        elif others:
            where = f"{self.region} (the price file's reference; {', '.join(others)} may differ)"
        else:
            return self.basis
        return f"{self.name} list prices for {where} of {self.date}, approximate"

    def machine(self, machine_type: str) -> MachinePrice | None:
        """The machine type from the table, else priced from its family's rates (GCE custom
        shapes like ``n1-custom-4-16384`` and sizes the table leaves out), else None."""
        known = self.machines.get(machine_type)
        if known is not None:
            return known
        custom = _CUSTOM.match(machine_type)
        if custom:
            family = self.families.get(custom.group("family") or "n1")
            if family is None:
                return None
            vcpus = int(custom.group("vcpus"))
            memory_gb = int(custom.group("memory_mb")) / 1024
            return self._derived(
                machine_type, family, vcpus, memory_gb, family.custom_premium, "custom shape"
            )
        shaped = _SHAPED.match(machine_type)
        if shaped:
            family = self.families.get(shaped.group("family"))
            ratio = family.shapes.get(shaped.group("shape")) if family else None
            if family is None or ratio is None:
                return None
            vcpus = int(shaped.group("vcpus"))
            return self._derived(
                machine_type, family, vcpus, vcpus * ratio, 1.0, f"{family.name} family rates"
            )
        return None

    @staticmethod
    def _derived(
        name: str, family: FamilyRates, vcpus: float, memory_gb: float, premium: float, how: str
    ) -> MachinePrice:
        on_demand = family.price(vcpus, memory_gb, spot=False, premium=premium)
        assert on_demand is not None  # on-demand rates are always present
        return MachinePrice(
            name=name,
            vcpus=vcpus,
            memory_gb=memory_gb,
            on_demand=on_demand,
            spot=family.price(vcpus, memory_gb, spot=True, premium=premium),
            derived=how,
        )

    def machines_with(self, gpu: str) -> list[MachinePrice]:
        """Machine types that come with `gpu`, cheapest first."""
        found = [m for m in self.machines.values() if gpu in m.gpus]
        return sorted(found, key=lambda m: (m.on_demand, m.name))


_CUSTOM = re.compile(r"^(?:(?P<family>[a-z][a-z0-9]*)-)?custom-(?P<vcpus>\d+)-(?P<memory_mb>\d+)$")
_SHAPED = re.compile(r"^(?P<family>[a-z][a-z0-9]*)-(?P<shape>[a-z]+)-(?P<vcpus>\d+)$")


class PriceDataError(ValueError):
    """The price file is malformed: a bug in the shipped data, caught by the tests."""


def _num(table: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = table.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PriceDataError(f"{where}: {key} must be a number, not {value!r}")
    return float(value)


def _parse_provider(name: str, table: Mapping[str, Any]) -> ProviderPrices:
    for key in ("date", "source", "region", "currency", "gpu_billing"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise PriceDataError(f"[{name}]: {key} must be a non-empty string")
    if table["gpu_billing"] not in (SEPARATE, INCLUDED):
        raise PriceDataError(f"[{name}]: gpu_billing must be {SEPARATE!r} or {INCLUDED!r}")
    machines: dict[str, MachinePrice] = {}
    for machine_name, row in table.get("machines", {}).items():
        where = f"[{name}.machines.{machine_name}]"
        gpus = row.get("gpus", {})
        if not isinstance(gpus, dict) or not all(
            isinstance(v, int) and v > 0 for v in gpus.values()
        ):
            raise PriceDataError(f"{where}: gpus must map GPU names to counts")
        machines[machine_name] = MachinePrice(
            name=machine_name,
            vcpus=_num(row, "vcpus", where),
            memory_gb=_num(row, "memory_gb", where),
            on_demand=_num(row, "on_demand", where),
            spot=_num(row, "spot", where, optional=True),
            gpus=dict(gpus),
        )
    families: dict[str, FamilyRates] = {}
    for family_name, row in table.get("families", {}).items():
        where = f"[{name}.families.{family_name}]"
        families[family_name] = FamilyRates(
            name=family_name,
            vcpu=_num(row, "vcpu", where),
            memory_gb=_num(row, "memory_gb", where),
            spot_vcpu=_num(row, "spot_vcpu", where, optional=True),
            spot_memory_gb=_num(row, "spot_memory_gb", where, optional=True),
            custom_premium=_num(row, "custom_premium", where, optional=True) or 1.0,
            shapes={k: float(v) for k, v in row.get("shapes", {}).items()},
        )
    gpus_out: dict[str, GpuPrice] = {}
    for gpu_name, row in table.get("gpus", {}).items():
        where = f"[{name}.gpus.{gpu_name}]"
        regions = row.get("regions", [])
        if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
            raise PriceDataError(f"{where}: regions must be a list of region names")
        gpus_out[gpu_name] = GpuPrice(
            name=gpu_name,
            model=str(row.get("model", gpu_name)),
            pci_id=str(row.get("pci_id", "")),
            memory_gb=_num(row, "memory_gb", where),
            on_demand=_num(row, "on_demand", where, optional=True),
            spot=_num(row, "spot", where, optional=True),
            regions=tuple(regions),
            note=str(row.get("note", "")),
        )
    for machine in machines.values():
        missing = [g for g in machine.gpus if g not in gpus_out]
        if missing:
            raise PriceDataError(
                f"[{name}.machines.{machine.name}]: unknown GPU {missing[0]!r} (add [{name}.gpus])"
            )
    disks = {
        disk: _num(row, "per_gb_month", f"[{name}.disks.{disk}]")
        for disk, row in table.get("disks", {}).items()
    }
    return ProviderPrices(
        name=name,
        date=table["date"],
        sources=tuple(table["source"].split()),
        region=table["region"],
        currency=table["currency"],
        note=str(table.get("note", "")),
        gpu_billing=table["gpu_billing"],
        default_disk=str(table["default_disk"]) if table.get("default_disk") else None,
        hours_per_month=_num(table, "hours_per_month", f"[{name}]"),
        minimum_seconds=_num(table, "minimum_seconds", f"[{name}]"),
        machines=machines,
        families=families,
        gpus=gpus_out,
        disks=disks,
    )


def parse_prices(text: str) -> dict[str, ProviderPrices]:
    """Every provider section of a price file's text."""
    from orchestrate.core.store import tomlparse

    data = tomlparse.loads(text)
    return {name: _parse_provider(name, table) for name, table in data.items()}


@lru_cache(maxsize=1)
def _shipped() -> dict[str, ProviderPrices]:
    text = resources.files("orchestrate.core.money").joinpath("data/prices.toml").read_text("utf-8")
    return parse_prices(text)


def load_prices(path: Path | None = None) -> dict[str, ProviderPrices]:
    """The shipped price list (read once per process), or the file at `path`."""
    if path is None:
        return _shipped()
    return parse_prices(path.read_text(encoding="utf-8"))


def provider_prices(provider: str) -> ProviderPrices | None:
    return load_prices().get(provider)
