"""A provider that prices its own instances (`OwnPrices`): the launch estimate, the cost
`status` keeps, and the `gpus` catalog come from it, never from core's price file, which
has no section for such a cloud."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orchestrate.core.api import provider as p
from orchestrate.core.app.commands.gpus import own_entry, render_table
from orchestrate.core.money import prices
from orchestrate.core.money.costs import estimate_for, price_extra

OFFERS = [p.GpuOffer("nvidia-rtx-4000-ada", "RTX 4000 Ada (AD104)", 20, "box-gpu-1", 1, 0.52)]


@dataclass(frozen=True)
class ToyOptions:
    machine: str = "box-gpu-1"


class ToyPricedProvider(p.Provider):
    """Just enough of a provider to be priced: nothing is created here."""

    name = "toycloud"
    options_class = ToyOptions

    def price_query(self, options: ToyOptions) -> p.PriceQuery:
        return p.PriceQuery(options.machine, p.GpuRequest("nvidia-rtx-4000-ada"))

    def price(self, query: p.PriceQuery) -> float | None:
        return {o.machine_type: o.on_demand for o in OFFERS}.get(query.machine_type)

    def gpu_offers(self) -> Sequence[p.GpuOffer]:
        return OFFERS

    def create(self, spec: p.LaunchSpec, zone: str) -> p.InstanceRecord:
        raise AssertionError("never created")

    get = start = create  # type: ignore[assignment]

    def stop(self, record: p.InstanceRecord) -> None:
        raise AssertionError("never stopped")

    destroy = stop


def test_the_launch_estimate_comes_from_the_provider() -> None:
    provider = ToyPricedProvider()
    assert isinstance(provider, p.OwnPrices)
    estimate = estimate_for(provider, ToyOptions())
    assert estimate is not None and estimate.per_hour == 0.52
    line = prices.price_line(estimate)
    assert line.startswith("estimated price: $0.520/h on demand (box-gpu-1 $0.520;")
    assert "toycloud's own price list, approximate" in line
    assert price_extra(provider, ToyOptions())["price_per_hour"] == 0.52  # what status uses


def test_no_price_from_the_provider_reads_unknown() -> None:
    estimate = estimate_for(ToyPricedProvider(), ToyOptions(machine="box-huge"))
    assert estimate is not None and estimate.per_hour is None
    assert prices.price_line(estimate) == (
        "estimated price: unknown (toycloud has no price for box-huge)"
    )


def test_the_gpu_catalog_lists_the_providers_offers() -> None:
    entry = own_entry("toycloud", ToyPricedProvider().gpu_offers())
    (row,) = entry["rows"]
    assert (row["gpu"], row["generation"], row["on_demand_per_hour"]) == (
        "nvidia-rtx-4000-ada", "Ada Lovelace", 0.52,
    )  # fmt: skip
    assert row["driver"].startswith("R") and row["machine_type"] == "box-gpu-1"
    assert "$0.520 box-gpu-1" in render_table(entry["rows"])[1]
