"""Ray's own view of a cluster for ``status NAME``: alive nodes, free GPUs and CPUs.

Read on the head with one command, ``ray status`` inside the head's Ray container (whose
environment already carries the token mode and the token file). The text report is parsed
by the autostop agent's reader, the same that counts Ray's work as the head's activity.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrate.core.api.errors import OrchestrateError
from orchestrate.plugins.host.autostop.agent import parse_ray_status
from orchestrate.plugins.host.ray import layout

COMMAND = "sudo -n docker exec " + shlex.quote(layout.HEAD_CONTAINER) + " ray status 2>&1"


def line(view: dict[str, Any]) -> str:
    """``ray: 3 nodes alive, GPUs 2/3 free, CPUs 5/8 free``."""

    def free(kind: str) -> str:
        used, total = view[kind]
        return f"{total - used:g}/{total:g} free"

    nodes = int(view["nodes"])
    alive = f"{nodes} node{'s' if nodes != 1 else ''} alive"
    return f"ray: {alive}, GPUs {free('GPU')}, CPUs {free('CPU')}"


def is_cluster_head(row: Any) -> bool:
    """A cluster's head row: the ``cluster`` column when the row has one, else the profile's
    ``nodes``; the head is node 0."""
    if getattr(row, "node_index", 0) not in (0, None):
        return False
    if getattr(row, "cluster", None):
        return True
    try:
        nodes = getattr(row.launched_profile(), "nodes", 1)
    except OrchestrateError:
        return False
    return isinstance(nodes, int) and nodes > 1


def status_notes(row: Any, session: Any) -> list[str]:
    """One line of Ray's view for a running cluster head read over ``session``."""
    if session is None or getattr(row, "status", None) != "running" or not is_cluster_head(row):
        return []
    try:
        result = session.run(COMMAND, timeout=30)
    except OrchestrateError as exc:
        return [f"ray: could not read the cluster's state: {exc.line()}"]
    view = parse_ray_status(result.stdout)
    if view is None:
        last = (result.stdout.strip().splitlines() or ["no output"])[-1][:160]
        return [f"ray: not answering on the head ({last})"]
    return [line(view)]
