"""Creating a cluster's nodes: all in one zone, at once, and never a part of a cluster.

The zone loop is `failover.each_zone`'s, the one policy; what is a cluster's own is the
attempt in one zone: every missing node is created in parallel, and when any of them meets
a capacity or quota error there, the nodes already made in that zone are deleted before the
error goes on to the loop, so the next zone gets the whole cluster.

Each worker thread has a provider object of its own (`provider_for`): a provider keeps its
SDK's connections, and those are not shared between threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import CapacityError, NotFound, QuotaError
from orchestrate.core.cloud.failover import EventSink, each_zone

T = TypeVar("T")
R = TypeVar("R")

#: Parallel cloud calls at most; a cluster larger than this creates in waves.
MAX_PARALLEL = 16


def in_parallel(items: Sequence[T], work: Callable[[T], R]) -> list[BaseException | R]:
    """`work(item)` for every item at once, each result or the exception it raised, in order.

    Nothing is cancelled when one fails: every create that was sent must be known, so that
    it is stored or deleted, never left billing unseen.
    """
    if not items:
        return []

    def guarded(item: T) -> BaseException | R:
        try:
            return work(item)
        except BaseException as exc:
            return exc

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(items))) as pool:
        return list(pool.map(guarded, items))


def first_error(results: Sequence[object]) -> BaseException | None:
    """The error that decides what happens next: a capacity or quota error first (the zone
    loop moves on), else the first one."""
    errors = [r for r in results if isinstance(r, BaseException)]
    for error in errors:
        if isinstance(error, (CapacityError, QuotaError)):
            return error
    return errors[0] if errors else None


def create_in_zone(
    provider_for: Callable[[], p.Provider],
    specs: Sequence[p.LaunchSpec],
    zone: str,
    *,
    on_created: Callable[[p.InstanceRecord], None],
    on_removed: Callable[[p.InstanceRecord], None],
) -> list[p.InstanceRecord]:
    """Create every spec in `zone` at once; their records in order.

    `on_created(record)` runs in the worker thread right after its create returned (store
    the cloud id there: a crash later must not lose it). When a capacity or quota error
    stopped any node, the ones created are deleted (`on_removed` after each) and the error
    is raised, so the cluster moves as a whole. Another error leaves the made nodes: they
    are stored, `status` shows them and a relaunch reuses them.
    """

    def make(spec: p.LaunchSpec) -> p.InstanceRecord:
        record = provider_for().create(spec, zone)
        record = with_spec_options(record, spec)
        on_created(record)
        return record

    results = in_parallel(list(specs), make)
    error = first_error(results)
    if error is None:
        return [r for r in results if isinstance(r, p.InstanceRecord)]
    if isinstance(error, (CapacityError, QuotaError)):
        made = [r for r in results if isinstance(r, p.InstanceRecord)]

        def remove(record: p.InstanceRecord) -> None:
            with contextlib.suppress(NotFound):  # gone already
                provider_for().destroy(record)
            on_removed(record)

        removal = first_error(in_parallel(made, remove))
        if removal is not None:
            raise removal
    raise error


def create_cluster(
    provider_for: Callable[[], p.Provider],
    specs: Sequence[p.LaunchSpec],
    on_event: EventSink,
    *,
    on_created: Callable[[p.InstanceRecord], None],
    on_removed: Callable[[p.InstanceRecord], None],
) -> list[p.InstanceRecord]:
    """Every node of a new cluster, in the first zone where all of them could be made."""
    head = specs[0]

    def attempt(zone: str) -> list[p.InstanceRecord]:
        return create_in_zone(
            provider_for, specs, zone, on_created=on_created, on_removed=on_removed
        )

    return each_zone(
        provider_for(),
        head,
        on_event,
        attempt,
        zone_of=lambda records: records[0].zone if records else None,
        what=f"the {len(specs)} nodes of {head.cluster}",
    )


def with_spec_options(record: p.InstanceRecord, spec: p.LaunchSpec) -> p.InstanceRecord:
    """The record as `destroy` needs it: carrying the options it was created with."""
    import dataclasses

    if record.options is not None:
        return record
    return dataclasses.replace(record, options=spec.options)


def lookup(provider: p.Provider, record: p.InstanceRecord | None, spec: p.LaunchSpec) -> Any:
    """The node as the cloud has it now, or None: by its stored id, else by name."""
    if record is not None and record.cloud_id:
        try:
            return provider.get(record)
        except NotFound:
            return None
    return provider.find(spec)
