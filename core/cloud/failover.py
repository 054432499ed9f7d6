"""Zone and region failover, shared by every provider.

Why here and not in each plugin: the policy (stockout -> next zone, regional quota -> skip the
region, cloud-wide quota -> stop at once with the fix) is the same on every cloud; providers
only translate their API's errors into `CapacityError` and `QuotaError` with a scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from orchestrate.core.api.errors import CapacityError, QuotaError
from orchestrate.core.api.provider import InstanceRecord, LaunchSpec, Provider

T = TypeVar("T")

#: called as on_event(kind, message, data); kinds: try, stockout, quota, skip, created.
EventSink = Callable[[str, str, dict[str, Any]], None]


def create_with_failover(
    provider: Provider, spec: LaunchSpec, on_event: EventSink, *, preflight: bool = True
) -> InstanceRecord:
    """Create `spec` in the first zone that works and return its record.

    Every try is reported through `on_event` so it reaches both the progress output and the
    event log. A cloud-wide quota error (from preflight or from a create) ends the loop before
    any further zone is touched.
    """
    return each_zone(
        provider,
        spec,
        on_event,
        lambda zone: provider.create(spec, zone),
        zone_of=lambda record: record.zone,
        preflight=preflight,
    )


def each_zone(
    provider: Provider,
    spec: LaunchSpec,
    on_event: EventSink,
    attempt: Callable[[str], T],
    *,
    zone_of: Callable[[T], str | None] = lambda _: None,
    preflight: bool = True,
    what: str = "the instance",
) -> T:
    """Run `attempt(zone)` zone by zone until one does not raise a capacity or regional
    quota error; return its result.

    The one failover policy: a lone instance's attempt is one create, a cluster's is the
    creates of all its nodes in that zone (which deletes what it made there before raising,
    so the whole cluster moves, never a part of it).
    """
    if preflight:
        provider.preflight(spec)
    zones = [z for z in provider.candidate_zones(spec)]
    if not zones:
        raise CapacityError(
            f"provider {provider.name} offers no zone for this request",
            zone="",
            hint="check the accelerator name with `orchestrate gpus`",
        )
    skipped_regions: set[str] = set()
    failures: list[str] = []
    for zone in zones:
        region = provider.region_of(zone, spec.options)
        if region in skipped_regions:
            on_event("skip", f"skipping {zone}: quota exhausted in {region}", {"zone": zone})
            continue
        on_event("try", f"creating in {zone or 'default zone'}", {"zone": zone})
        try:
            result = attempt(zone)
        except CapacityError as exc:
            failures.append(f"{zone}: no capacity")
            on_event("stockout", f"{zone}: {exc.message}", {"zone": zone})
            continue
        except QuotaError as exc:
            if exc.scope == "cloud":
                raise
            skipped_regions.add(exc.region or region)
            failures.append(f"{zone}: regional quota")
            on_event("quota", f"{zone}: {exc.message}", {"zone": zone, "region": region})
            continue
        made = zone_of(result) or zone
        on_event("created", f"created in {made}", {"zone": made})
        return result
    raise CapacityError(
        f"no zone could create {what}: " + "; ".join(failures),
        zone=zones[-1],
        hint="add zones to the profile (`zones = [...]`), pick another GPU, or try later",
    )
