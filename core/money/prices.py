"""What an instance costs: the hourly estimate `launch` shows, the running total `status` shows.

The whole point of orchestrate is that nobody pays for a GPU they forgot, so the price has to
be in front of the user *before* anything is created, and again every time they look at a
running or stopped instance. The numbers come from the dated price file
(`orchestrate.core.money.pricefile`); every line printed from them says "approximate" and
names that date, so a stale file is visible rather than silently wrong.

Billing rules that shape the arithmetic:

- GCE bills GPUs separately from the machine (even for G2/A2/A3 types, whose GPUs are fixed
  by the machine type); EC2 machine prices include their GPUs (``gpu_billing`` in the file).
- Both bill running instances per second after a one-minute minimum per start.
- A stopped instance costs nothing for compute but its disk still bills, per GB-month; the
  providers divide by 730 hours.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrate.core.api.provider import PriceQuery
from orchestrate.core.money.billing import money
from orchestrate.core.money.pricefile import SEPARATE, ProviderPrices, load_prices, provider_prices

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
    #: instances priced together (a cluster's nodes); `per_hour` is for all of them
    nodes: int = 1

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
    regions: Sequence[str] | None = None,
    prices: Mapping[str, ProviderPrices] | None = None,
) -> Estimate:
    """The estimated price per hour of a running instance: machine + GPUs (+ its disk).

    A machine type that comes with GPUs is priced with those GPUs whatever was asked (the
    provider bills them anyway); on EC2 the machine price already includes them. With a
    `disk_type` and `disk_gb` the boot disk's hourly share is added too, since it bills
    while the instance runs. Unknown parts make ``per_hour`` None, never a guess.
    `regions` (where the instance may land) words the basis: see `basis_for`.
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
        basis=table.basis if regions is None else table.basis_for(regions),
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


def for_nodes(estimate: Estimate, nodes: int) -> Estimate:
    """The estimate of `nodes` instances of one shape (a cluster): every part bills per node."""
    import dataclasses

    total = None if estimate.per_hour is None else estimate.per_hour * nodes
    return dataclasses.replace(estimate, per_hour=total, nodes=nodes)


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
    if estimate.nodes > 1:
        each = money(estimate.per_hour / estimate.nodes)
        return (
            f"estimated price: {money(estimate.per_hour)}/h {kind} for {estimate.nodes} nodes "
            f"({each}/h each: {estimate.parts()}; {estimate.basis}{extra})"
        )
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
    if estimate.nodes > 1:
        return (
            f"{estimate.nodes} nodes of {estimate.machine_type} cost about "
            f"{money(estimate.per_hour)}/h, above your confirm_above of {money(threshold)}/h: "
            "create them?"
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


# -- a provider's priced shape ---------------------------------------------------------------


def with_default_disk(provider: str, query: PriceQuery) -> PriceQuery:
    """`query` with its disk type filled from the provider's price list when it names none
    (an EC2 root volume is gp3 unless the provider says otherwise)."""
    if query.disk_type is not None:
        return query
    table = provider_prices(provider)
    if table is None or table.default_disk is None:
        return query
    return dataclasses.replace(query, disk_type=table.default_disk)


def own_estimate(provider: str, query: PriceQuery, per_hour: float | None) -> Estimate:
    """The estimate of a provider that prices its own instances (`OwnPrices`): one figure
    for the whole instance, or unknown when the provider has none."""
    gpu = query.gpu
    missing = () if per_hour is not None else (f"{provider} has no price for {query.machine_type}",)
    return Estimate(
        provider, query.machine_type, gpu.name if gpu else None, gpu.count if gpu else 0,
        query.spot, per_hour, None, None, per_hour,
        basis=f"{provider}'s own price list, approximate", notes=missing,
    )  # fmt: skip


def estimate(provider: str, query: PriceQuery) -> Estimate:
    """The hourly estimate of a provider's `PriceQuery` (see `Provider.price_query`)."""
    query = with_default_disk(provider, query)
    gpu = query.gpu
    return hourly(
        provider,
        query.machine_type,
        gpu.name if gpu is not None else None,
        gpu.count if gpu is not None else 0,
        query.spot,
        disk_type=query.disk_type,
        disk_gb=query.disk_gb,
        regions=query.regions,
    )
