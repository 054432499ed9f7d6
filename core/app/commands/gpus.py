"""`orchestrate gpus`: the GPU catalog, so the choice of GPU is made with price and driver in view.

For each provider: every GPU it rents, its architecture generation and the driver branch
orchestrate installs for it (both from `orchestrate.core.api.gpu_table`, the table the driver step
uses), its memory, its price per hour on demand and spot, and where it is offered.

Prices and places come from the price file (`orchestrate.core.money.pricefile`), dated and sourced,
because the providers' pricing APIs need credentials and differ per cloud; the price file's GPU
rows are generated from a dated catalog snapshot (`orchestrate.core.api.gpu_catalog`). Where a
provider can list its GPUs' locations itself it implements ``gpu_locations(options)`` (see
`GpuLocations`; GCE's aggregated ``acceleratorTypes``, EC2's
``DescribeInstanceTypeOfferings``): ``orchestrate gpus --refresh`` asks it with the profile's
credentials and caches the answer with its date (``gpu_locations.json`` in the state folder),
so later runs show the live places without asking again. Each row says where its places came
from.

A provider without a price list (one that uses a host you already have) still gets the
generation/driver table: which driver each GPU generation gets on any host.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from orchestrate.core.api.provider import GpuLocations, OwnPrices
from orchestrate.core.wiring.runtime import Runtime, echo, echo_json

if TYPE_CHECKING:  # pragma: no cover - types only
    from orchestrate.core.money.pricefile import GpuPrice, ProviderPrices

#: Places shown per row in the text table (``--json`` has them all).
SHOWN_PLACES = 4


def _price_cell(amount: float | None, machine: str | None) -> str:
    from orchestrate.core.money.billing import money

    if amount is None:
        return "-"
    return f"{money(amount)} {machine}" if machine else money(amount)


def gpu_row(
    table: ProviderPrices, gpu: GpuPrice, places: Sequence[str], places_source: str
) -> dict[str, Any]:
    """One catalog row: the GPU, its generation and driver, memory, prices, places."""
    from orchestrate.core.api import gpu_table

    generation_key = gpu_table.generation_of(gpu.pci_id, gpu.model)
    known = generation_key != gpu_table.UNKNOWN
    generation = gpu_table.generation(generation_key) if known else None
    driver = gpu_table.driver_row(generation_key)
    machine: str | None = None
    if table.gpu_billing == "separate":
        on_demand, spot = gpu.on_demand, gpu.spot
        basis = "per GPU, plus the machine type"
    else:
        carriers = table.machines_with(gpu.name)
        cheapest = carriers[0] if carriers else None
        on_demand = cheapest.on_demand if cheapest else None
        spot = cheapest.spot if cheapest else None
        machine = cheapest.name if cheapest else None
        basis = (
            f"the whole {machine} ({cheapest.gpus[gpu.name]} GPU), the cheapest type with it"
            if cheapest
            else "no machine type in the price list carries it"
        )
    return {
        "provider": table.name,
        "gpu": gpu.name,
        "model": gpu.model,
        "generation": generation.label if generation else "unknown",
        "compute_capability": generation.compute if generation else None,
        "driver": f"R{driver.branch} {driver.modules}",
        "max_cuda": driver.max_cuda,
        "memory_gb": gpu.memory_gb,
        "on_demand_per_hour": on_demand,
        "spot_per_hour": spot,
        "machine_type": machine,
        "price_basis": basis,
        "currency": table.currency,
        "where": list(places),
        "where_source": places_source,
        "note": gpu.note,
        "prices_as_of": table.date,
    }


def offer_rows(provider: str, offers: Sequence[Any]) -> list[dict[str, Any]]:
    """Catalog rows from a provider that prices its own instances (`OwnPrices.gpu_offers`),
    in the shape `gpu_row` gives, oldest generation first."""
    from orchestrate.core.api import gpu_table

    order = [g.key for g in gpu_table.GENERATIONS]
    keyed = []
    for offer in offers:
        key = gpu_table.generation_of("", offer.model)
        generation = gpu_table.generation(key) if key != gpu_table.UNKNOWN else None
        driver = gpu_table.driver_row(key)
        rank = order.index(key) if key in order else len(order)
        row = {
            "provider": provider, "gpu": offer.gpu, "model": offer.model,
            "generation": generation.label if generation else "unknown",
            "compute_capability": generation.compute if generation else None,
            "driver": f"R{driver.branch} {driver.modules}", "max_cuda": driver.max_cuda,
            "memory_gb": offer.memory_gb, "on_demand_per_hour": offer.on_demand,
            "spot_per_hour": offer.spot, "machine_type": offer.machine_type,
            "price_basis": f"the whole {offer.machine_type} ({offer.count} GPU)",
            "currency": "USD", "where": list(offer.where),
            "where_source": f"the {provider} plugin", "note": None, "prices_as_of": None,
        }  # fmt: skip
        keyed.append(((rank, offer.memory_gb, offer.gpu, offer.count), row))
    return [row for _, row in sorted(keyed, key=lambda item: item[0])]


def own_entry(provider: str, offers: Sequence[Any]) -> dict[str, Any]:
    """The `gpus` entry of a provider that prices its own instances."""
    return {
        "prices": {
            "date": "its own", "region": "its regions", "currency": "USD",
            "sources": [f"the {provider} plugin"], "note": "prices the plugin supplies",
            "basis": "per hour for the whole instance with its GPUs",
        },
        "locations_error": None,
        "rows": offer_rows(provider, offers),
    }  # fmt: skip


def catalog_rows(
    table: ProviderPrices,
    locations: Mapping[str, Sequence[str]] | None = None,
    locations_source: str | None = None,
) -> list[dict[str, Any]]:
    """Every GPU in the provider's price list, oldest generation first. `locations` (from
    the provider's API) replace the price file's places for the GPUs it names."""
    from orchestrate.core.api import gpu_table

    order = [g.key for g in gpu_table.GENERATIONS]
    keyed = []
    for gpu in table.gpus.values():
        if locations is not None and gpu.name in locations:
            places, source = list(locations[gpu.name]), locations_source or "provider API"
        else:
            places, source = list(gpu.regions), f"data file, {table.date}"
        generation = gpu_table.generation_of(gpu.pci_id, gpu.model)
        rank = order.index(generation) if generation in order else len(order)
        keyed.append(((rank, gpu.memory_gb, gpu.name), gpu_row(table, gpu, places, source)))
    return [row for _, row in sorted(keyed, key=lambda item: item[0])]


def provider_locations(
    provider: Any, options: Any
) -> tuple[Mapping[str, Sequence[str]] | None, str | None]:
    """The provider's own GPU locations when it can give them, else (None, why not)."""
    from orchestrate.core.api.errors import OrchestrateError

    if not isinstance(provider, GpuLocations):
        return None, None
    try:
        return provider.gpu_locations(options), None
    except OrchestrateError as exc:
        return None, exc.line()


def cache_file() -> Path:
    from orchestrate.core.store import paths

    return paths.state_dir() / "gpu_locations.json"


def read_cache() -> dict[str, Any]:
    """Provider -> {date, locations} from the last ``--refresh``; {} when none or unreadable
    (the cache only saves a request: the data file is the fallback)."""
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(provider: str, locations: Mapping[str, Sequence[str]]) -> str:
    """Store `provider`'s live answer with today's date; return that date."""
    from datetime import date

    today = date.today().isoformat()
    data = read_cache()
    data[provider] = {"date": today, "locations": {k: list(v) for k, v in locations.items()}}
    path = cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    return today


def _where(row: Mapping[str, Any]) -> str:
    places = list(row["where"])
    if not places:
        return f"nowhere now ({row['note']})" if row["note"] else "nowhere listed"
    shown = ", ".join(places[:SHOWN_PLACES])
    more = f" (+{len(places) - SHOWN_PLACES} more)" if len(places) > SHOWN_PLACES else ""
    return shown + more


def render_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The text table: one line per GPU, aligned columns."""
    headers = ("GPU", "MODEL", "ARCH", "DRIVER", "MEMORY", "ON-DEMAND/H", "SPOT/H", "WHERE")
    cells = [
        (
            str(row["gpu"]),
            str(row["model"]),
            str(row["generation"]),
            str(row["driver"]),
            f"{row['memory_gb']:g} GB",
            _price_cell(row["on_demand_per_hour"], row["machine_type"]),
            _price_cell(row["spot_per_hour"], None),
            _where(row),
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    lines = []
    for line in (headers, *cells):
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return lines


def generation_lines() -> list[str]:
    """For providers without a price list: the driver each GPU generation gets."""
    from orchestrate.core.api import gpu_table

    lines = []
    for row in gpu_table.table_rows():
        lines.append(
            f"  {row['generation']:<13} {row['driver']} {row['modules']:<12} "
            f"CUDA <= {row['max_cuda']:<5} {row['examples']}"
        )
    return lines


def register(app: typer.Typer) -> None:
    @app.command("gpus")
    def gpus_command(
        ctx: typer.Context,
        provider: Optional[str] = typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
            None, "--provider", help="Only this provider's GPUs."
        ),
        profile: Optional[str] = typer.Option(  # noqa: UP045
            None, "--profile", help="Profile whose provider options (credentials) to use."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
        refresh: bool = typer.Option(
            False, "--refresh", help="Ask the providers' APIs where GPUs are (credentials)."
        ),
    ) -> None:
        """The GPU catalog: generation, driver branch, memory, price per hour, where offered."""
        from orchestrate.core.api.errors import UsageError
        from orchestrate.core.money.pricefile import load_prices

        runtime: Runtime = ctx.obj
        prices = load_prices()
        registered = runtime.providers()
        known = sorted(set(prices) | set(registered))
        if provider is not None and provider not in known:
            raise UsageError(
                f"unknown provider {provider!r}",
                hint=f"known: {', '.join(known)}; see `orchestrate providers`",
            )
        names = [provider] if provider else known
        chosen_profile = runtime.profile(profile) if profile else None
        cached = read_cache()
        result: dict[str, Any] = {}
        for name in names:
            table = prices.get(name)
            own = registered.get(name)
            if table is None and isinstance(own, OwnPrices):
                result[name] = own_entry(name, own.gpu_offers())
                continue
            if table is None:
                result[name] = {"prices": None, "rows": []}
                continue
            locations, why_not, source = None, None, None
            if name in cached:
                locations = cached[name]["locations"]
                source = f"provider API, {cached[name]['date']}"
            plugin = registered.get(name)
            if refresh and plugin is not None and isinstance(plugin, GpuLocations):
                use_table: Mapping[str, Any] = (
                    chosen_profile.provider_table()
                    if chosen_profile is not None and chosen_profile.provider == name
                    else {}
                )
                try:
                    options = plugin.validate_options(use_table, f"[{name}]")
                except UsageError as exc:
                    locations, why_not = None, exc.line()
                else:
                    fresh, why_not = provider_locations(plugin, options)
                    if fresh is not None:
                        locations, source = fresh, f"provider API, {write_cache(name, fresh)}"
            result[name] = {
                "prices": {
                    "date": table.date,
                    "region": table.region,
                    "currency": table.currency,
                    "sources": list(table.sources),
                    "note": table.note,
                    "basis": (
                        "per GPU-hour, on top of the machine type's price (GPUs bill separately)"
                        if table.gpu_billing == "separate"
                        else "per hour for the whole instance of the cheapest type with the "
                        "GPU (instance prices include their GPUs)"
                    ),
                },
                "locations_error": why_not,
                "rows": catalog_rows(table, locations, source),
            }
        if as_json:
            echo_json(result)
            return
        for i, name in enumerate(names):
            if i:
                echo()
            entry = result[name]
            if entry["prices"] is None:
                echo(
                    f"{name}: no price list (a host you bring yourself); the driver each GPU "
                    "generation gets there:"
                )
                for line in generation_lines():
                    echo(line)
                continue
            meta = entry["prices"]
            echo(
                f"{name}: approximate list prices in {meta['currency']} for {meta['region']} "
                f"as of {meta['date']} ({meta['note']})"
            )
            echo(f"  sources: {' '.join(meta['sources'])}")
            live = {r["where_source"] for r in entry["rows"]}
            live = {source for source in live if source.startswith("provider API")}
            if live:
                echo(f"  places: {', '.join(sorted(live))} (orchestrate gpus --refresh)")
            echo(f"  prices: {meta['basis']}")
            if entry["locations_error"]:
                echo(f"  places from the data file: {entry['locations_error']}")
            for line in render_table(entry["rows"]):
                echo(line)
