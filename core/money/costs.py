"""Money as `launch` and `status` show it.

Kept apart from the state and provider logic: prices are estimates from a dated data file
and may never block a launch or hide an instance from `status`.
"""

from __future__ import annotations

from typing import Any

from orchestrate.core.api.errors import OrchestrateError
from orchestrate.core.api.provider import OwnPrices, PriceQuery
from orchestrate.core.money import prices
from orchestrate.core.money.billing import spent_line
from orchestrate.core.store.state import InstanceRow

STOPPED = ("stopped", "terminated", "stopping")


def query_for(provider: Any, options: Any) -> PriceQuery | None:
    """The priced shape of a provider's validated options, as the provider states it
    (`Provider.price_query`), with the disk type its price list implies; None: unpriced."""
    query: PriceQuery | None = provider.price_query(options)
    return prices.with_default_disk(provider.name, query) if query is not None else None


def estimate_of(provider: Any, query: PriceQuery) -> prices.Estimate:
    """The hourly estimate of `query`: from the provider itself when it prices its own
    instances (`OwnPrices`), else from core's price file."""
    name: str = provider.name
    if isinstance(provider, OwnPrices):
        return prices.own_estimate(name, query, provider.price(query))
    return prices.estimate(name, query)


def estimate_for(provider: Any, options: Any) -> prices.Estimate | None:
    """The hourly estimate of a provider's validated options, or None when unpriced."""
    query = query_for(provider, options)
    return estimate_of(provider, query) if query is not None else None


def _query_for_row(runtime: Any, row: InstanceRow) -> PriceQuery | None:
    profile = row.launched_profile()
    provider = runtime.provider(row.provider)
    options = provider.validate_options(profile.provider_tables.get(row.provider, {}), row.name)
    return query_for(provider, options)


def price_extra(provider: Any, options: Any) -> dict[str, Any]:
    """What the state row keeps about money at launch, so `status` prices a row without
    loading the provider plugin or validating its options again (None: not priced)."""
    query = query_for(provider, options)
    if query is None:
        return {"price_per_hour": None, "disk_type": None, "disk_gb": None}
    return {
        "price_per_hour": estimate_of(provider, query).per_hour,
        "disk_type": query.disk_type,
        "disk_gb": query.disk_gb,
    }


def _money_facts(runtime: Any, row: InstanceRow) -> tuple[float | None, str | None, float]:
    if "price_per_hour" in row.extra:
        extra = row.extra
        return extra.get("price_per_hour"), extra.get("disk_type"), float(extra.get("disk_gb") or 0)
    try:
        query = _query_for_row(runtime, row)
        if query is None:
            return None, None, 0.0
        per_hour = estimate_of(runtime.provider(row.provider), query).per_hour
    except OrchestrateError:
        return None, None, 0.0
    return per_hour, query.disk_type, query.disk_gb


def cost_notes(runtime: Any, row: InstanceRow) -> list[str]:
    """Uptime and cost so far for a running row, disk cost for a stopped one."""
    notes: list[str] = []
    per_hour, disk_type, disk_gb = _money_facts(runtime, row)
    if row.status == "running":
        if per_hour is not None and row.started_at:
            notes.append(spent_line(per_hour, row.started_at))
    elif row.status in STOPPED and disk_type and disk_gb:
        notes.append(prices.stopped_line(row.provider, disk_type, disk_gb))
    return notes


def node_cost(runtime: Any, row: InstanceRow, now: float) -> float | None:
    """What a running row has cost so far (None: stopped, or no price known); summed over
    a cluster's nodes by `status`."""
    from orchestrate.core.money.billing import cost_so_far

    if row.status != "running" or not row.started_at:
        return None if row.status == "running" else 0.0
    per_hour, _, _ = _money_facts(runtime, row)
    return None if per_hour is None else cost_so_far(per_hour, row.started_at, now)
