"""Instance convergence: from a state row and a spec to a running instance, never two.

`launch` may run after a crash at any point. The intent row exists before the first cloud
call; if it has no cloud id yet, the provider is asked whether an instance of that name
exists (the create may have reached the cloud before the crash) before creating one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import NotFound, ProviderError
from orchestrate.core.api.grammar import address
from orchestrate.core.api.retry import Retry
from orchestrate.core.cloud.failover import create_with_failover
from orchestrate.core.store.state import InstanceRow, State

Progress = Callable[[str], None]

#: How long a launch waits for an instance that is still being created or stopped (by an
#: earlier, interrupted launch or by the cloud): a VM boots or stops within a few minutes.
SETTLE_DEADLINE_S = 600.0


def record_of(row: InstanceRow, provider: p.Provider | None = None) -> p.InstanceRecord:
    """The provider's view of a state row; with `provider`, carrying the options the
    instance was launched with (`launched_options`)."""
    return p.InstanceRecord(
        name=row.name,
        provider=row.provider,
        zone=row.zone,
        cloud_id=row.cloud_id,
        status=row.status,
        address=row.address,
        ssh_user=row.ssh_user or "",
        ssh_port=row.ssh_port,
        extra={k: v for k, v in row.extra.items() if k not in (OPTIONS_KEY, INTERNAL_KEY)},
        internal_address=row.extra.get(INTERNAL_KEY),
        options=launched_options(row, provider) if provider is not None else None,
    )


#: The key of `InstanceRow.extra` that holds the launch's options, as the provider's
#: `redacted_options` gave them (paths and source names, never a secret).
OPTIONS_KEY = "options"

#: The key of `InstanceRow.extra` that holds `InstanceRecord.internal_address`.
INTERNAL_KEY = "internal_address"


def launched_options(row: InstanceRow, provider: p.Provider) -> Any:
    """The validated options `row` was launched with, or None when they no longer validate.

    The row keeps the redacted options of its launch (flags such as `--zone` applied), read
    back through `validate_options`; a row from before that, or whose redacted form is not
    a valid table, falls back to the launched profile's sub-table. Never raises: `down` of
    a row whose options a provider upgrade now refuses must still work from `extra`.
    """
    from orchestrate.core.api.errors import OrchestrateError

    where = f"the state row of {row.name}"
    tables = []
    stored = row.extra.get(OPTIONS_KEY)
    if isinstance(stored, dict):
        tables.append(stored)
    tables.append(row.launched_profile().provider_tables.get(row.provider, {}))
    for table in tables:
        try:
            return provider.validate_options(table, where)
        except OrchestrateError:
            continue
    return None


def store(state: State, record: p.InstanceRecord, **more: Any) -> None:
    """Write what the provider said about the instance into its row.

    `extra` is merged, not replaced: core keeps its own facts there (the GPU asked for).
    The address is checked first (an IP address or a host name): it goes on to sockets,
    the ssh_config and command lines, and a cloud's answer is not trusted to be one.
    """
    if record.address:
        address(record.address, f"{record.provider}'s address for {record.name}")
    row = state.get(record.name)
    extra = {**(row.extra if row is not None else {}), **record.extra}
    if record.internal_address:
        # Where the other nodes of a cluster reach it; checked like the external one.
        address(record.internal_address, f"{record.provider}'s internal address for {record.name}")
        extra[INTERNAL_KEY] = record.internal_address
    state.update(
        record.name,
        zone=record.zone,
        cloud_id=record.cloud_id,
        status=record.status,
        address=record.address,
        ssh_user=record.ssh_user,
        ssh_port=record.ssh_port,
        extra=extra,
        **more,
    )


def ensure_running(
    state: State,
    provider: p.Provider,
    spec: p.LaunchSpec,
    progress: Progress,
    *,
    after_create: Callable[[], None] = lambda: None,
    deadline_s: float = SETTLE_DEADLINE_S,
) -> p.InstanceRecord:
    """Reuse, start or create the instance for `spec`; return it running with an address.

    `after_create` runs between a successful create call and the record being stored (the
    launch's crash point there). A create or start that returns the instance `PENDING` is
    stored at once (its cloud id is what a later command needs), then polled with `get`
    until it runs, for at most `deadline_s`.
    """
    row = state.get(spec.name)
    assert row is not None, "record_intent() comes first"
    gpu = f"{spec.gpu.name}:{spec.gpu.count}" if spec.gpu else None
    if row.extra.get("gpu") != gpu:
        state.update(spec.name, extra={**row.extra, "gpu": gpu})

    def on_event(kind: str, message: str, data: dict[str, Any]) -> None:
        progress(message)
        state.event(spec.name, kind, message, data)

    record: p.InstanceRecord | None = None
    if row.cloud_id:
        try:
            record = provider.get(with_options(record_of(row), spec.options))
        except NotFound:
            on_event("vanished", f"{spec.name} is gone on {provider.name}; creating it again", {})
            record = None
    else:
        record = provider.find(spec)
        if record is not None:
            on_event("adopted", f"found {spec.name} on {provider.name} from an earlier try", {})
    if record is not None:
        record = settle(provider, with_options(record, spec.options), on_event, deadline_s)
    if record is None:
        record = create_with_failover(provider, spec, on_event)
        after_create()
        # A new machine: a key pinned for the one it replaces (gone on the cloud) would
        # refuse it, and nothing is set up on it yet. Its own key is pinned at first contact.
        store(state, record, started_at=time.time(), host_key=None, setup_hash=None)
        return running(state, provider, spec, record, on_event, deadline_s)
    if record.status in (p.STOPPED, p.STOPPING, p.TERMINATED):
        on_event("starting", f"starting {spec.name}", {"zone": record.zone})
        record = provider.start(with_options(record, spec.options))
        store(state, record, started_at=time.time())
        return running(state, provider, spec, record, on_event, deadline_s)
    store(state, record)
    if row.started_at is None:
        state.update(spec.name, started_at=time.time())
    return record


def with_options(record: p.InstanceRecord, options: Any) -> p.InstanceRecord:
    """`record` carrying `options` for the provider's lifecycle calls, unless it has some."""
    if record.options is not None:
        return record
    return dataclasses.replace(record, options=options)


def running(
    state: State,
    provider: p.Provider,
    spec: p.LaunchSpec,
    record: p.InstanceRecord,
    on_event: Callable[[str, str, dict[str, Any]], None],
    deadline_s: float,
) -> p.InstanceRecord:
    """The just created or started instance once it runs; stored again when it had to be
    waited for (its address is known only now)."""
    if record.status == p.RUNNING:
        return record
    record = settle(provider, with_options(record, spec.options), on_event, deadline_s)
    if record.status != p.RUNNING:
        raise ProviderError(
            f"{record.name} is {record.status} on {provider.name}, not running, after it "
            "was started",
            hint=f"check it in the cloud console, then `orchestrate launch {record.name}` "
            "again or `down`",
        )
    store(state, record)
    return record


def settled(record: p.InstanceRecord) -> bool:
    """Not on its way to another state: what `settle` waits for."""
    return record.status not in (p.PENDING, p.STOPPING)


def settle(
    provider: p.Provider,
    record: p.InstanceRecord,
    on_event: Callable[[str, str, dict[str, Any]], None],
    deadline_s: float = SETTLE_DEADLINE_S,
) -> p.InstanceRecord:
    """Wait while the instance is pending or stopping; return it running or stopped.

    A launch killed while the cloud was still creating the instance leaves it PENDING: the
    next launch adopts it and must wait for it to run (it has no address yet, and a cloud
    refuses to start an instance that is still stopping) instead of failing or creating a
    second one.
    """
    if settled(record):
        return record
    on_event("waiting", f"{record.name} is {record.status} on {provider.name}; waiting", {})
    reads = iter([record])  # the first read is the record in hand, then the cloud's answer
    policy = Retry(deadline_s=deadline_s, first_s=0.25, max_s=5.0, factor=1.5)
    options = record.options
    record, done = policy.poll(
        lambda: next(reads, None) or provider.get(with_options(record, options)),
        settled,
    )
    if not done:
        raise ProviderError(
            f"{record.name} is still {record.status} on {provider.name} after {deadline_s:.0f} s",
            hint="check it in the cloud console, then run `launch` again or `down`",
        )
    return record
