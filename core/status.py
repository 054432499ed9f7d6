"""What `status` shows: each state row, refreshed from its provider in parallel.

A row whose instance is gone on the cloud is shown as such rather than dropped: the user
decides with `down`. Refresh failures are notes on the row, never a crash of the listing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from orchestrate.core.errors import NotFound, OrchestrateError
from orchestrate.core.state import InstanceRow

REFRESH_WORKERS = 8


def _refresh(runtime: Any, row: InstanceRow) -> tuple[InstanceRow, list[str]]:
    from orchestrate.core.instances import record_of, store

    notes: list[str] = []
    if row.cloud_id is None:
        if row.status == "creating":
            notes.append("launch did not finish: `launch` again resumes, `down` cleans up")
        return row, notes
    try:
        provider = runtime.provider(row.provider)
        record = provider.get(record_of(row))
    except NotFound:
        notes.append("gone on the cloud side: `down` forgets it")
        return InstanceRow(**{**row.__dict__, "status": "missing"}), notes
    except OrchestrateError as exc:
        notes.append(f"could not refresh: {exc.line()}")
        return row, notes
    if record.status != row.status or record.address != row.address:
        extra: dict[str, Any] = {}
        if record.status != "running":
            extra["started_at"] = None
        state = runtime.state()
        store(state, record, **extra)
        fresh = state.get(row.name)
        if fresh is not None:
            row = fresh
    return row, notes


def collect(runtime: Any, name: str | None, *, refresh: bool) -> list[dict[str, Any]]:
    from orchestrate.core.background import is_our_tunnel

    state = runtime.state()
    rows = [r for r in state.all() if name is None or r.name == name]
    if name is not None and not rows:
        from orchestrate.core.commands.lifecycle import _row

        _row(runtime, name)
    results: list[tuple[InstanceRow, list[str]]]
    if refresh and rows:
        # Each refresh is one API call on its own connection; the state writes serialise on
        # SQLite's lock, so a thread pool keeps `status` near one round trip.
        with ThreadPoolExecutor(max_workers=min(REFRESH_WORKERS, len(rows))) as pool:
            results = list(pool.map(lambda r: _refresh(runtime, r), rows))
    else:
        results = [(r, []) for r in rows]
    now = time.time()
    out = []
    for row, notes in results:
        values = row.profile.get("values", {})
        tunnel = "detached" if is_our_tunnel(row.tunnel_pid, row.name) else "none"
        if tunnel == "detached" and row.local_port:
            tunnel = f"localhost:{row.local_port}"
        out.append(
            {
                "name": row.name,
                "provider": row.provider,
                "status": row.status,
                "zone": row.zone,
                "address": row.address,
                "ssh": f"{row.ssh_user}@{row.address}:{row.ssh_port}" if row.address else None,
                "gpu": row.extra.get("gpu"),
                "image": values.get("image"),
                "autostop": values.get("autostop"),
                "uptime_s": now - row.started_at if row.started_at else None,
                "tunnel": tunnel,
                "notes": notes,
            }
        )
    return out
