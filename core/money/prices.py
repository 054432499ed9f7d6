"""What an instance costs: the hourly estimate `launch` shows, the running total `status` shows.

The whole point of orchestrate is that nobody pays for a GPU they forgot, so the price has to
be in front of the user *before* anything is created, and again every time they look at a
running or stopped instance. Provider pricing APIs need credentials, are slow and differ per
cloud, so the numbers come from a data file shipped with the package
(``orchestrate/core/money/data/prices.toml``): approximate public list prices for one reference
region per provider, each section carrying the date they were copied and the pages they came
from. Every line printed from them says "approximate" and names that date, so a stale file
is visible rather than silently wrong.

Billing rules that shape the arithmetic:

- GCE bills GPUs separately from the machine (even for G2/A2/A3 types, whose GPUs are fixed
  by the machine type); EC2 machine prices include their GPUs (``gpu_billing`` in the file).
- Both bill running instances per second after a one-minute minimum per start.
- A stopped instance costs nothing for compute but its disk still bills, per GB-month; the
  providers divide by 730 hours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from orchestrate.core.money.billing import money

#: The confirmation threshold `launch` uses when the profile sets none ($ per hour).
DEFAULT_CONFIRM_ABOVE = 5.0

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


# -- loading -------------------------------------------------------------------------------


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


# -- arithmetic ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """The hourly price of one instance shape, split into its parts, with its basis.

    ``per_hour`` is None when a part has no price in the data file; ``notes`` say which part
    and any assumption made (bundled GPUs, a GPU request the machine type overrides).
    """

    provider: str
    machine_type: str
    gpu: str | None
    gpu_count: int
    spot: bool
    machine_per_hour: float | None
    gpu_per_hour: float | None
    disk_per_hour: float | None
    per_hour: float | None
    currency: str = "USD"
    basis: str = ""
    notes: tuple[str, ...] = ()

    @property
    def known(self) -> bool:
        return self.per_hour is not None

    def parts(self) -> str:
        """ "n1-standard-2 $0.095 + 1x nvidia-tesla-t4 $0.350 + disk $0.0068"."""
        pieces = [f"{self.machine_type} {money(self.machine_per_hour)}"]
        if self.gpu and self.gpu_count and self.gpu_per_hour:
            pieces.append(f"{self.gpu_count}x {self.gpu} {money(self.gpu_per_hour)}")
        if self.disk_per_hour:
            pieces.append(f"disk {money(self.disk_per_hour)}")
        return " + ".join(pieces)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "machine_type": self.machine_type,
            "gpu": self.gpu,
            "gpu_count": self.gpu_count,
            "spot": self.spot,
            "machine_per_hour": self.machine_per_hour,
            "gpu_per_hour": self.gpu_per_hour,
            "disk_per_hour": self.disk_per_hour,
            "per_hour": self.per_hour,
            "currency": self.currency,
            "basis": self.basis,
            "notes": list(self.notes),
        }


def hourly(
    provider: str,
    machine_type: str,
    gpu: str | None = None,
    count: int = 0,
    spot: bool = False,
    *,
    disk_type: str | None = None,
    disk_gb: float = 0,
    prices: Mapping[str, ProviderPrices] | None = None,
) -> Estimate:
    """The estimated price per hour of a running instance: machine + GPUs (+ its disk).

    A machine type that comes with GPUs is priced with those GPUs whatever was asked (the
    provider bills them anyway); on EC2 the machine price already includes them. With a
    `disk_type` and `disk_gb` the boot disk's hourly share is added too, since it bills
    while the instance runs. Unknown parts make ``per_hour`` None, never a guess.
    """
    table = (prices if prices is not None else load_prices()).get(provider)
    gpu = gpu or None
    count = count if gpu else 0
    if table is None:
        return Estimate(
            provider, machine_type, gpu, count, spot, None, None, None, None,
            notes=(f"no price list for provider {provider!r}",),
        )  # fmt: skip
    notes: list[str] = []
    machine = table.machine(machine_type)
    machine_price: float | None = None
    if machine is None:
        notes.append(f"no price for machine type {machine_type!r} in the {table.name} list")
    else:
        machine_price = machine.price(spot)
        if machine_price is None:
            notes.append(f"no spot price for {machine_type}")
        if machine.derived:
            notes.append(f"{machine_type} priced from {machine.derived}")
    bundled = dict(machine.gpus) if machine is not None else {}
    if bundled:
        (bundled_gpu, bundled_count), *more = bundled.items()
        if more:  # no provider mixes GPU types in one machine type; keep the arithmetic honest
            notes.append(f"{machine_type} lists several GPU types; priced with {bundled_gpu}")
        if gpu is not None and (gpu, count) != (bundled_gpu, bundled_count):
            notes.append(
                f"{machine_type} comes with {bundled_count}x {bundled_gpu}: priced as such, "
                f"not as the {count}x {gpu} asked for"
            )
        gpu, count = bundled_gpu, bundled_count
    gpu_price: float | None = 0.0
    if gpu is not None and table.gpu_billing == SEPARATE:
        row = table.gpus.get(gpu)
        unit = row.price(spot) if row is not None else None
        if unit is None:
            gpu_price = None
            notes.append(
                f"no {'spot ' if spot else ''}price for GPU {gpu!r} in the {table.name} list"
            )
        else:
            gpu_price = unit * count
    elif gpu is not None and not bundled:
        notes.append(f"{machine_type} has no GPU on {table.name}; {gpu} is not priced")
    disk_price: float | None = 0.0
    if disk_type is not None and disk_gb:
        disk_price = disk_cost_per_hour(provider, disk_type, disk_gb, prices=prices)
        if disk_price is None:
            notes.append(f"no price for disk type {disk_type!r}")
    total: float | None = None
    if machine_price is not None and gpu_price is not None and disk_price is not None:
        total = machine_price + gpu_price + disk_price
    return Estimate(
        provider=provider,
        machine_type=machine_type,
        gpu=gpu,
        gpu_count=count,
        spot=spot,
        machine_per_hour=machine_price,
        gpu_per_hour=gpu_price,
        disk_per_hour=disk_price or None,
        per_hour=total,
        currency=table.currency,
        basis=table.basis,
        notes=tuple(notes),
    )


def disk_cost_per_hour(
    provider: str,
    disk_type: str,
    size_gb: float,
    *,
    prices: Mapping[str, ProviderPrices] | None = None,
) -> float | None:
    """What a disk costs per hour (it bills while the instance is stopped, too)."""
    table = (prices if prices is not None else load_prices()).get(provider)
    if table is None or disk_type not in table.disks:
        return None
    return table.disks[disk_type] * size_gb / table.hours_per_month


# -- lines for the CLI ---------------------------------------------------------------------


def price_line(estimate: Estimate) -> str:
    """The line `launch` prints before creating anything.

    "estimated price: $0.45/h on demand (n1-standard-2 $0.095 + 1x nvidia-tesla-t4 $0.350;
    gcp list prices for us-central1 of 2025-01-15, approximate)".
    """
    kind = "spot" if estimate.spot else "on demand"
    if estimate.per_hour is None:
        why = "; ".join(estimate.notes) or "no price data"
        return f"estimated price: unknown ({why})"
    extra = "".join(f"; {note}" for note in estimate.notes)
    return (
        f"estimated price: {money(estimate.per_hour)}/h {kind} "
        f"({estimate.parts()}; {estimate.basis}{extra})"
    )


def confirm_question(estimate: Estimate, threshold: float) -> str:
    """The question `launch` asks when `confirm_needed` says so."""
    if estimate.per_hour is None:
        return (
            f"the price of {estimate.machine_type} is unknown to orchestrate "
            f"(confirm_above is {money(threshold)}/h): create it anyway?"
        )
    return (
        f"{estimate.machine_type} costs about {money(estimate.per_hour)}/h, above your "
        f"confirm_above of {money(threshold)}/h: create it?"
    )


def stopped_line(provider: str, disk_type: str, size_gb: float) -> str:
    """The line `status` prints for a stopped instance: only its disk bills now.

    "stopped: no compute billing; its 50 GB pd-balanced disk costs about $0.0068/h
    ($5.00/month)".
    """
    per_hour = disk_cost_per_hour(provider, disk_type, size_gb)
    table = provider_prices(provider)
    if per_hour is None or table is None:
        return f"stopped: no compute billing; its {size_gb:g} GB {disk_type} disk still bills"
    per_month = per_hour * table.hours_per_month
    return (
        f"stopped: no compute billing; its {size_gb:g} GB {disk_type} disk costs about "
        f"{money(per_hour)}/h ({money(per_month)}/month)"
    )


# -- from provider options -----------------------------------------------------------------


@dataclass(frozen=True)
class PriceQuery:
    """The shape to price, read from a provider's validated options."""

    provider: str
    machine_type: str
    gpu: str | None = None
    gpu_count: int = 0
    spot: bool = False
    disk_type: str | None = None
    disk_gb: float = 0

    def estimate(self) -> Estimate:
        return hourly(
            self.provider,
            self.machine_type,
            self.gpu,
            self.gpu_count,
            self.spot,
            disk_type=self.disk_type,
            disk_gb=self.disk_gb,
        )


def _first(options: Any, names: tuple[str, ...], kind: type | tuple[type, ...]) -> Any:
    """The first of `names` that `options` has with a value of `kind` (booleans excluded)."""
    for name in names:
        value = getattr(options, name, None)
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
    return None


def query_from_options(
    provider: str, options: Any, gpu: tuple[str, int] | None = None
) -> PriceQuery | None:
    """A `PriceQuery` from provider options, by the attribute names providers use
    (``machine_type``/``instance_type``, ``spot``/``preemptible``, ``disk_type``/
    ``volume_type``, ``disk_gb``/``volume_gb``); None when no machine type is found. A
    provider without a disk type option gets its price list's ``default_disk`` (EC2: gp3).

    Core never looks inside provider options otherwise; `gpu` should come from
    ``Provider.gpu_request(options)`` (name, count), the contract's own view of the GPU.
    """
    machine_type = _first(options, ("machine_type", "instance_type", "size"), str)
    if not machine_type:
        return None
    spot = any(getattr(options, name, False) is True for name in ("spot", "preemptible"))
    table = provider_prices(provider)
    disk_type = _first(options, ("disk_type", "volume_type"), str) or (
        table.default_disk if table is not None else None
    )
    disk_gb = _first(options, ("disk_gb", "disk_size_gb", "volume_gb", "volume_size"), (int, float))
    name, count = gpu if gpu is not None else (None, 0)
    return PriceQuery(
        provider=provider,
        machine_type=machine_type,
        gpu=name,
        gpu_count=count,
        spot=spot,
        disk_type=disk_type,
        disk_gb=float(disk_gb or 0),
    )
