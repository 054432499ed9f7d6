"""Money as `launch` and `status` show it.

Kept apart from the state and provider logic: prices are estimates from a dated data file
and may never block a launch or hide an instance from `status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import OrchestrateError
from orchestrate.core.money.billing import uptime_line
from orchestrate.core.store.state import InstanceRow

if TYPE_CHECKING:
    from orchestrate.core.money import prices

# `core.prices` (the price file and its tables) is imported where a price is looked up:
# `status` words the cost of rows `launch` priced from the state alone (`core.billing`).

STOPPED = ("stopped", "terminated", "stopping")


def query_for(provider: Any, options: Any) -> prices.PriceQuery | None:
    """The priced shape of a provider's validated options (None when it has no machine
    type), with the GPU as the provider itself reports it."""
    from orchestrate.core.money import prices

    gpu = provider.gpu_request(options)
    return prices.query_from_options(
        provider.name, options, (gpu.name, gpu.count) if gpu is not None else None
    )


def estimate_for(provider: Any, options: Any) -> prices.Estimate | None:
    """The hourly estimate of a provider's validated options, or None when unpriced."""
    query = query_for(provider, options)
    return query.estimate() if query is not None else None


def _query_for_row(runtime: Any, row: InstanceRow) -> prices.PriceQuery | None:
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
        "price_per_hour": query.estimate().per_hour,
        "disk_type": query.disk_type,
        "disk_gb": query.disk_gb,
    }


def _money_facts(runtime: Any, row: InstanceRow) -> tuple[float | None, str | None, float]:
    if "price_per_hour" in row.extra:
        extra = row.extra
        return extra.get("price_per_hour"), extra.get("disk_type"), float(extra.get("disk_gb") or 0)
    try:
        query = _query_for_row(runtime, row)
    except OrchestrateError:
        return None, None, 0.0
    if query is None:
        return None, None, 0.0
    return query.estimate().per_hour, query.disk_type, query.disk_gb


def cost_notes(runtime: Any, row: InstanceRow) -> list[str]:
    """Uptime and cost so far for a running row, disk cost for a stopped one."""
    notes: list[str] = []
    per_hour, disk_type, disk_gb = _money_facts(runtime, row)
    if row.status == "running":
        if per_hour is not None and row.started_at:
            notes.append(uptime_line(per_hour, row.started_at))
    elif row.status in STOPPED and disk_type and disk_gb:
        from orchestrate.core.money import prices

        notes.append(prices.stopped_line(row.provider, disk_type, disk_gb))
    return notes
