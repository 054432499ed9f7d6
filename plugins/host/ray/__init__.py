"""Ray on a cluster's nodes: the built-in plugin ``host.ray``.

- `layout`: ports, folders and the token's way into Ray (shared with the notebook step),
- `step`: the ``ray`` host step (head or worker container),
- `status`: Ray's own view of the cluster for ``status``,
- `drain`: Ray's node stopped before `scale` deletes a worker.

A lone instance (`StepContext.cluster` None) gets nothing from this plugin. Hook
implementations import their module on first call, so ``status`` over many rows and
``--help`` pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.hooks import hookimpl

if TYPE_CHECKING:
    from orchestrate.core.api.hoststeps import HostStep, StepContext


@hookimpl
def orchestrate_host_steps(context: StepContext) -> list[HostStep]:
    """The Ray container step on a cluster node; nothing on a lone instance."""
    if context.cluster is None:
        return []
    from orchestrate.plugins.host.ray.step import ray_step

    return [ray_step(context)]


@hookimpl
def orchestrate_status_notes(row: Any, session: Any) -> Sequence[str]:
    """Ray's view (alive nodes, free GPUs and CPUs) for a cluster head read by `status NAME`."""
    if session is None or getattr(row, "cluster", None) is None:
        return []  # a listing, or a lone instance: nothing to read, nothing to import
    from orchestrate.plugins.host.ray.status import status_notes

    return status_notes(row, session)


@hookimpl
def orchestrate_before_node_removed(row: Any, session: Any) -> None:
    """`scale` is about to delete this worker: stop its Ray node first (see `drain`)."""
    from orchestrate.plugins.host.ray.drain import drain

    drain(row, session)
