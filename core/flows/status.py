"""What `status` shows: each state row, refreshed from its provider in parallel.

A row whose instance is gone on the cloud is shown as such rather than dropped: the user
decides with `down`. Refresh failures are notes on the row, never a crash of the listing.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import NotFound, OrchestrateError
from orchestrate.core.store.state import InstanceRow

if TYPE_CHECKING:
    from orchestrate.core.api.provider import InstanceRecord

REFRESH_WORKERS = 8
_local = threading.local()


def _provider(runtime: Any, name: str) -> Any:
    """This worker thread's own provider object: a provider keeps its SDK's connections
    (libcloud's are not thread-safe), so threads never share one."""
    from orchestrate.core.wiring.registry import pick_provider, providers

    mine: dict[str, Any] | None = getattr(_local, "providers", None)
    if mine is None or getattr(_local, "pm", None) is not runtime.pm:
        mine = providers(runtime.pm)
        _local.providers, _local.pm = mine, runtime.pm
    return pick_provider(mine, name)


@dataclass
class _Refreshed:
    """What one refresh learnt; `record`, when set, is written to the row afterwards."""

    row: InstanceRow
    notes: list[str] = field(default_factory=list)
    record: InstanceRecord | None = None
    more: dict[str, Any] = field(default_factory=dict)
    #: the cloud has no such instance: shown as "missing", the row itself left as it is
    missing: bool = False


def _refresh(runtime: Any, row: InstanceRow) -> _Refreshed:
    """Ask the cloud about one row. Runs in a worker thread, so it never touches the state
    database: SQLite connections belong to the thread that opened them."""
    from orchestrate.core.cloud.instances import record_of

    if row.cloud_id is None:
        return _look_up(runtime, row)
    try:
        provider = _provider(runtime, row.provider)
        record = provider.get(record_of(row, provider))
    except NotFound:
        return _read(row, None)
    except OrchestrateError as exc:
        return _Refreshed(row, [f"could not refresh: {exc.line()}"])
    return _read(row, record)


def _refresh_many(runtime: Any, rows: list[InstanceRow]) -> list[_Refreshed]:
    """Rows of one `RefreshesMany` provider, read in one call (a worker thread, as above)."""
    from orchestrate.core.cloud.instances import record_of

    try:
        provider = _provider(runtime, rows[0].provider)
        found = provider.get_many([record_of(r, provider) for r in rows])
    except OrchestrateError as exc:
        return [_Refreshed(row, [f"could not refresh: {exc.line()}"]) for row in rows]
    return [_read(row, found.get(row.name)) for row in rows]


def _read(row: InstanceRow, record: InstanceRecord | None) -> _Refreshed:
    """What the cloud said of `row`: the instance as it is now, or None for gone."""
    if record is None:
        return _Refreshed(row, ["gone on the cloud side: `down` forgets it"], missing=True)
    if record.status == row.status and record.address == row.address:
        return _Refreshed(row)
    more: dict[str, Any] = {}
    if record.status != "running":
        more["started_at"] = None
    return _Refreshed(row, record=record, more=more)


def _refresh_all(runtime: Any, rows: list[InstanceRow]) -> list[_Refreshed]:
    """Every row asked about in parallel, in row order.

    Rows with a cloud id whose provider reads many instances in one call (`RefreshesMany`)
    go to it together, one task per provider; every other row is its own task. Each task
    is one or a few API calls on a connection of its own, so `status` stays near one round
    trip however many rows there are.
    """
    from concurrent.futures import ThreadPoolExecutor

    from orchestrate.core.api.provider import RefreshesMany

    loaded = runtime.providers()
    batched: dict[str, list[InstanceRow]] = {}
    for row in rows:
        if row.cloud_id is not None and isinstance(loaded.get(row.provider), RefreshesMany):
            batched.setdefault(row.provider, []).append(row)
    batched = {name: group for name, group in batched.items() if len(group) > 1}
    in_batch = {row.name for group in batched.values() for row in group}
    tasks: list[Any] = [
        lambda group=group: _refresh_many(runtime, group) for group in batched.values()
    ]
    tasks += [lambda row=row: [_refresh(runtime, row)] for row in rows if row.name not in in_batch]
    with ThreadPoolExecutor(max_workers=min(REFRESH_WORKERS, len(tasks))) as pool:
        done = [item for result in pool.map(lambda task: task(), tasks) for item in result]
    by_name = {item.row.name: item for item in done}
    return [by_name[row.name] for row in rows]


def _look_up(runtime: Any, row: InstanceRow) -> _Refreshed:
    """A row with no cloud id: ask the cloud whether the instance exists after all.

    A launch killed during the create call leaves its intent row without a cloud id while
    the instance boots and bills; status shows that instance as it is, and records it, so
    `stop`, `start` and `down` reach it by id.
    """
    from orchestrate.core.flows.launch import make_plan

    unfinished = "launch did not finish: `launch` again resumes, `down` cleans up"
    try:
        provider = _provider(runtime, row.provider)
        plan = make_plan(runtime, row.name, row.launched_profile(), {}, token=None)
        found = provider.find(plan.spec)
    except OrchestrateError as exc:
        return _Refreshed(row, [f"could not look it up on the cloud: {exc.line()}"])
    if found is None:
        return _Refreshed(row, [unfinished] if row.status == "creating" else [])
    return _Refreshed(row, [unfinished], record=found)


def collect(runtime: Any, name: str | None, *, refresh: bool) -> list[dict[str, Any]]:
    from orchestrate.core.flows.background import tunnel_kind
    from orchestrate.core.flows.notebook_url import local_url, token_where
    from orchestrate.core.money.costs import cost_notes

    state = runtime.state()
    if name is not None:
        from orchestrate.core.flows.rows import row_named

        named = row_named(runtime, name)  # a worker's name is refused with its cluster's
        rows = state.nodes(named.cluster) if named.cluster is not None else [named]
    else:
        rows = state.all()
    results: list[tuple[InstanceRow, list[str]]] = []
    if refresh and rows:
        from orchestrate.core.cloud.instances import store

        if any(r.cloud_id is None for r in rows):
            from orchestrate.core.ssh.keys import ensure_ssh_key

            ensure_ssh_key()  # a look-up plans with the key; made here, not by two workers
        # Providers are loaded once in `_refresh_all`, not raced for by the workers; what
        # the workers learnt is written here, on this thread.
        refreshed = _refresh_all(runtime, rows)
        for item in refreshed:
            row = item.row
            current = state.get(row.name)
            if current is None:
                continue  # deleted while the cloud was asked (a `down` beside this status)
            if current.status != row.status:
                # Another command (a `stop`, a `start`) changed the row while the cloud was
                # asked: its word is as fresh as ours and says who did it; keep it.
                results.append((current, list(item.notes)))
                continue
            if item.missing:
                results.append((InstanceRow(**{**row.__dict__, "status": "missing"}), item.notes))
                continue
            if item.record is not None:
                store(state, item.record, **item.more)
                row = state.get(row.name) or row
            notes = list(item.notes)
            if row.status in ("stopped", "terminated") and item.row.status == "running":
                # orchestrate did not stop it (its `stop` writes "stopped" first): the agent did.
                state.update(row.name, extra={**row.extra, "stopped_by": "autostop"})
                state.event(row.name, "autostopped", "found stopped; autostop is the cause")
                row = state.get(row.name) or row
            results.append((row, notes))
    else:
        results = [(r, []) for r in rows]
    now = time.time()
    out: list[dict[str, Any]] = []
    heads: dict[str, dict[str, Any]] = {}
    for row, notes in results:
        if row.cluster is not None and row.node_index and row.cluster in heads:
            # A cluster is one entry, its head's, with every node listed under it.
            heads[row.cluster]["nodes"].append(_node_entry(runtime, row, notes, now))
            continue
        launched = row.launched_profile()
        # One instance asked for by name: plugins may also read its host over SSH.
        live = bool(name and refresh and row.status == "running")
        plugin_notes = plugin_status_notes(runtime, row, live=live)
        kind = tunnel_kind(row)
        tunnel = f"localhost:{row.local_port}" if kind and row.local_port else "none"
        out.append(
            {
                "name": row.name,
                "provider": row.provider,
                "status": row.status,
                "zone": row.zone,
                "address": row.address,
                "ssh": f"{row.ssh_user}@{row.address}:{row.ssh_port}" if row.address else None,
                "gpu": row.extra.get("gpu"),
                "image": launched.image,
                "autostop": launched.autostop,
                "uptime_s": now - row.started_at if row.started_at else None,
                "tunnel": tunnel,
                "tunnel_kind": kind,
                "tunnel_pid": row.tunnel_pid if kind else None,
                "url": local_url(row),
                "token_in": token_where(row),
                "setup_hash": row.setup_hash,
                "notes": notes + cost_notes(runtime, row) + plugin_notes,
            }
        )
        if row.cluster is not None:
            from orchestrate.core.flows.background import detached_dashboard_port

            dashboard = detached_dashboard_port(row) if row.node_index == 0 else None
            out[-1]["cluster"] = row.cluster
            out[-1]["dashboard"] = f"http://localhost:{dashboard}" if dashboard else None
            out[-1]["nodes"] = [_node_entry(runtime, row, notes, now)]
            heads.setdefault(row.cluster, out[-1])
    for entry in heads.values():
        total = _cluster_cost(entry["nodes"])
        if total is not None and len(entry["nodes"]) > 1:
            entry["notes"].append(total)
    return out


def _node_entry(runtime: Any, row: InstanceRow, notes: list[str], now: float) -> dict[str, Any]:
    """One node of a cluster as `status` lists it under the cluster."""
    from orchestrate.core.cloud.instances import INTERNAL_KEY
    from orchestrate.core.money.costs import node_cost

    return {
        "name": row.name,
        "index": row.node_index,
        "role": "head" if not row.node_index else "worker",
        "status": row.status,
        "zone": row.zone,
        "address": row.address,
        "internal_address": row.extra.get(INTERNAL_KEY),
        "gpu": row.extra.get("gpu"),
        "uptime_s": now - row.started_at if row.started_at else None,
        "cost_so_far": node_cost(runtime, row, now),
        "notes": list(notes),
    }


def _cluster_cost(nodes: list[dict[str, Any]]) -> str | None:
    """ "cluster: about $X so far on N running nodes" from the nodes' own costs."""
    from orchestrate.core.money.billing import money

    running = [n for n in nodes if n["status"] == "running"]
    if not running:
        return None
    costs = [n["cost_so_far"] for n in running]
    if any(cost is None for cost in costs):
        return f"cluster: cost unknown for some of its {len(running)} running nodes"
    return f"cluster: about {money(sum(costs))} so far on {len(running)} running nodes"


def plugin_status_notes(runtime: Any, row: InstanceRow, *, live: bool) -> list[str]:
    """The lines plugins add to a row (`orchestrate_status_notes`), each said once.

    With `live`, they get one short SSH session to the running host; a host that does not
    answer is a note, not a failure of `status`.
    """
    session = None
    notes: list[str] = []
    if live and row.address and row.host_key:
        from orchestrate.core.flows.rows import connect_shared
        from orchestrate.core.ssh.keys import ensure_ssh_key

        try:
            session = connect_shared(
                runtime, row.name, ensure_ssh_key(), lambda message: None, deadline_s=10
            )
        except OrchestrateError as exc:
            notes.append(f"could not reach the host: {exc.line()}")
    try:
        for lines in runtime.pm.hook.orchestrate_status_notes(row=row, session=session):
            notes.extend(line for line in lines if line not in notes)
    finally:
        if session is not None:
            session.close()
    return notes
