"""How many nodes a bed cluster's Ray counts alive, read on the head node itself.

Two readings, because they differ: Ray's node table in its GCS (what ``ray.nodes()`` in a
notebook reads), asked through the state API of the dashboard on the head's 127.0.0.1 with
the cluster's token; and ``ray status`` in the head's Ray container (what ``orchestrate
status`` and the autostop agent read), which reports a node only once Ray's autoscaler
monitor has published it (seconds after the node table, on this machine). Both run inside the head's
namespaces as root (``BedNode.exec``), not over the product's SSH, so they add nothing to
what a benchmark counts. The token goes to curl on stdin, never on a command line.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrate.core.api.hoststeps import ClusterContext

_GCS_NODES = (
    "printf 'Authorization: Bearer %s\\n' \"$(tr -d '[:space:]' < {token})\" | "
    "curl -sf -m 20 -H @- 'http://127.0.0.1:{port}/api/v0/nodes?limit=1000&detail=false'"
)


def alive_in_gcs(head: Any, dashboard_port: int = 8265) -> int | None:
    """Alive nodes in Ray's node table (None: the dashboard does not answer yet)."""
    command = _GCS_NODES.format(token=ClusterContext.token_file, port=dashboard_port)
    shown = head.exec(command, timeout=60, check=False)
    if shown.returncode != 0:
        return None
    try:
        nodes = json.loads(shown.stdout)["data"]["result"]["result"]
    except (ValueError, KeyError, TypeError):
        return None
    return sum(1 for node in nodes if node.get("state") == "ALIVE")


def alive_in_ray_status(head: Any) -> int | None:
    """Alive nodes per ``ray status`` in the head's Ray container (None: no answer yet)."""
    from orchestrate.plugins.host.autostop.agent import parse_ray_status
    from orchestrate.plugins.host.ray.layout import HEAD_CONTAINER

    shown = head.exec(["docker", "exec", HEAD_CONTAINER, "ray", "status"], timeout=120,
                      check=False)  # fmt: skip
    view = parse_ray_status(shown.stdout) if shown.returncode == 0 else None
    return None if view is None else int(view["nodes"])
