"""Money and autostop, as `launch` and `status` show them.

Kept apart from the state and provider logic: prices are estimates from a dated data file,
and the autostop report reads the agent's files on the host; neither may ever block a
launch or hide an instance from `status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestrate.core.billing import uptime_line
from orchestrate.core.errors import OrchestrateError
from orchestrate.core.state import InstanceRow

if TYPE_CHECKING:
    from orchestrate.core import prices

# `core.prices` (the price file and its tables) is imported where a price is looked up:
# `status` words the cost of rows `launch` priced from the state alone (`core.billing`).

STOPPED = ("stopped", "terminated", "stopping")


def query_for(provider: Any, options: Any) -> prices.PriceQuery | None:
    """The priced shape of a provider's validated options (None when it has no machine
    type), with the GPU as the provider itself reports it."""
    from orchestrate.core import prices

    gpu = provider.gpu_request(options)
    return prices.query_from_options(
        provider.name, options, (gpu.name, gpu.count) if gpu is not None else None
    )


def estimate_for(provider: Any, options: Any) -> prices.Estimate | None:
    """The hourly estimate of a provider's validated options, or None when unpriced."""
    query = query_for(provider, options)
    return query.estimate() if query is not None else None


def _query_for_row(runtime: Any, row: InstanceRow) -> prices.PriceQuery | None:
    from orchestrate.core.launch import profile_from_snapshot

    profile = profile_from_snapshot(row.profile)
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
    """Uptime and cost so far for a running row, disk cost for a stopped one, and why a
    running instance may bill longer than wanted.

    The autostop report (and the agent code it reads) is imported only when a row needs a
    line from it: `status` over many rows must stay quick.
    """
    from orchestrate.core.profiles import parse_duration

    notes: list[str] = []
    setting = row.profile.get("values", {}).get("autostop")
    try:
        window = parse_duration(str(setting)) if setting is not None else None
    except OrchestrateError:
        window = None
    per_hour, disk_type, disk_gb = _money_facts(runtime, row)
    if row.status == "running":
        if per_hour is not None and row.started_at:
            notes.append(uptime_line(per_hour, row.started_at))
        if window is None:
            from orchestrate.plugins.host.autostop import report

            notes.extend(report.warnings(None, setting))
    elif row.status in STOPPED:
        if row.extra.get("stopped_by") == "autostop" and window is not None:
            from orchestrate.plugins.host.autostop import report

            line = report.inferred_stop_line(setting)
            if line:
                notes.append(line)
        if disk_type and disk_gb:
            from orchestrate.core import prices

            notes.append(prices.stopped_line(row.provider, disk_type, disk_gb))
    return notes


def host_autostop_notes(row: InstanceRow) -> list[str]:
    """What the agent on a running host says: activity, last stop, and warnings such as
    idle past its window. One short SSH connection; a host that does not answer is a note."""
    from orchestrate.core.keys import ensure_ssh_key
    from orchestrate.core.session import Session
    from orchestrate.plugins.host.autostop import report

    if not (row.address and row.host_key):
        return []
    try:
        session = Session.connect(
            row.address,
            row.ssh_port,
            row.ssh_user or "orchestrate",
            ensure_ssh_key().private_path,
            pinned_host_key=row.host_key,
            deadline_s=10,
            name=row.name,
        )
        try:
            result = session.run(report.status_command(), timeout=20)
        finally:
            session.close()
    except OrchestrateError as exc:
        return [f"could not read the autostop agent: {exc.line()}"]
    seen = report.parse_status(result.stdout)
    setting = row.profile.get("values", {}).get("autostop")
    notes = [line for line in (report.activity_line(seen), report.last_stop_line(seen)) if line]
    return notes + [w for w in report.warnings(seen, setting) if w not in notes]
