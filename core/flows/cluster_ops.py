"""`stop`, `down` and `scale` of a cluster: every node at once, the network rule last.

`down` deletes the nodes in parallel (the head first and alone when notebooks are copied
from it: a failed copy must delete nothing), then the cluster's network rule once no node
is left, then the cluster's secret file. `scale` removes the highest-index workers, each
drained first through `orchestrate_before_node_removed` (Ray's node stopped before its
instance goes), or adds workers as a relaunch of the cluster with more nodes does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import OrchestrateError, UsageError
from orchestrate.core.flows.cluster import forget_token, in_threads, raise_first
from orchestrate.core.store.state import InstanceRow
from orchestrate.core.wiring.runtime import Runtime

Progress = Callable[[str], None]


def nodes_of(runtime: Runtime, head: InstanceRow) -> list[InstanceRow]:
    """The cluster's rows, head first; a lone instance is its only node."""
    if head.cluster is None:
        return [head]
    return runtime.state().nodes(head.cluster)


def down_cluster(
    runtime: Runtime,
    head: InstanceRow,
    *,
    sync_to: Path | None,
    progress: Progress,
    force: bool = False,
) -> None:
    """Delete every node of the cluster, then its network rule and its secret."""
    from orchestrate.core.flows.teardown import down

    assert head.cluster is not None
    rows = nodes_of(runtime, head)
    options = _launched_options(runtime, rows)
    head_row = rows[0] if rows and rows[0].node_index == 0 else None
    if sync_to is not None and head_row is not None:
        # The copy comes first and alone: when it fails, nothing is deleted.
        down(runtime, head_row, sync_to=sync_to, progress=progress, force=force)
        head_row = None
    workers = [row for row in rows if row.node_index]

    def one(rt: Runtime, row: InstanceRow) -> None:
        down(rt, row, sync_to=None, progress=progress, force=force)

    # Workers first, the head last: while any node is left, the cluster's name finds it.
    results = in_threads(runtime, workers, one)
    raise_first(results, [row.name for row in workers])
    if head_row is not None:
        down(runtime, head_row, sync_to=None, progress=progress, force=force)
    release_network(runtime, head.cluster, head.provider, options, progress)


def _launched_options(runtime: Runtime, rows: list[InstanceRow]) -> Any:
    from orchestrate.core.cloud.instances import launched_options

    for row in rows:
        options = launched_options(row, runtime.provider(row.provider))
        if options is not None:
            return options
    return None


def release_network(
    runtime: Runtime, cluster: str, provider_name: str, options: Any, progress: Progress
) -> None:
    """The cluster's rule and secret go once no node of it is left."""
    if runtime.state().nodes(cluster):
        return
    provider = runtime.provider(provider_name)
    if isinstance(provider, p.ClusterNetworks) and options is not None:
        provider.release_cluster_network(cluster, options)
        progress(f"network rule of {cluster} deleted")
    forget_token(cluster)


def stop_cluster(runtime: Runtime, head: InstanceRow, *, progress: Progress) -> bool:
    """Stop every node in parallel; False when none was ever created."""
    from orchestrate.core.flows.teardown import stop

    rows = nodes_of(runtime, head)
    results = in_threads(runtime, rows, lambda rt, row: stop(rt, row, progress=progress))
    raise_first(results, [row.name for row in rows])
    return any(result is True for result in results)


def with_nodes(profile: Any, nodes: int) -> Any:
    """The profile with its node count set (what the cluster's rows then record)."""
    return dataclasses.replace(profile, values={**profile.values, "nodes": nodes})


def remove_workers(
    runtime: Runtime, head: InstanceRow, nodes: int, *, progress: Progress
) -> list[str]:
    """Delete the workers with index >= `nodes`, each drained first; their names."""
    from orchestrate.core.flows.rows import connect
    from orchestrate.core.flows.teardown import down
    from orchestrate.core.ssh.keys import ensure_ssh_key

    doomed = [row for row in nodes_of(runtime, head) if (row.node_index or 0) >= nodes]
    doomed.sort(key=lambda row: -(row.node_index or 0))

    def drain_and_delete(rt: Runtime, row: InstanceRow) -> None:
        session = None
        if row.status == "running" and row.address and row.host_key:
            try:
                session = connect(rt, row.name, ensure_ssh_key(), progress, deadline_s=20)
            except OrchestrateError as exc:
                progress(f"warning: cannot reach {row.name} to drain it ({exc.line()})")
        try:
            rt.pm.hook.orchestrate_before_node_removed(row=row, session=session)
        except Exception as exc:  # a plugin's failure must not keep it billing
            progress(f"warning: draining {row.name} failed ({exc}); deleting it anyway")
        finally:
            if session is not None:
                session.close()
        rt.state().event(row.name, "drained", f"{row.name} leaves {row.cluster}")
        down(rt, row, sync_to=None, progress=progress)

    results = in_threads(runtime, doomed, drain_and_delete)
    raise_first(results, [row.name for row in doomed])
    return [row.name for row in doomed]


def check_scale(head: InstanceRow, nodes: int) -> None:
    if head.cluster is None:
        raise UsageError(
            f"{head.name} is a lone instance, not a cluster",
            hint=f"`orchestrate down {head.name}`, then `orchestrate launch {head.name} "
            f"--nodes {nodes}`",
        )
    if nodes < 1:
        raise UsageError(f"--nodes must be 1 or more, not {nodes}", hint="the head is node 1")
