"""Draining a worker before `scale` deletes it: Ray's node is stopped first.

Stopped from inside (``ray stop`` in the worker's container), the node tells the head it is
leaving, so the tasks and actors on it are rescheduled at once instead of after the head's
heartbeat timeout. The container's restart policy is switched off first, or docker would
start the node again the moment it stopped; then the container is removed.
"""

from __future__ import annotations

import shlex
from typing import Any

from orchestrate.plugins.host.ray import layout

#: Seconds Ray gives the node's processes to end before it kills them.
GRACE_S = 30

COMMAND = (
    'if [ "$(id -u)" = 0 ]; then d=docker; else d="sudo -n docker"; fi; '
    f"c={shlex.quote(layout.WORKER_CONTAINER)}; "
    '$d update --restart=no "$c" >/dev/null 2>&1 || exit 0; '
    f'$d exec "$c" ray stop --grace-period {GRACE_S} >/dev/null 2>&1; '
    '$d rm -f "$c" >/dev/null'
)


def drain(row: Any, session: Any) -> None:
    """Stop Ray on the worker `row` over `session` (nothing without a session: a node that
    cannot be reached is not running Ray for the cluster either)."""
    if session is None or not getattr(row, "node_index", 0):
        return
    session.run(COMMAND, timeout=GRACE_S + 60)
