"""Named crash points: a testing aid that SIGKILLs this process at a precise place.

Why: "a crash at any phase loses nothing" is only a claim until a real process is really
killed at each phase and the next command is seen to cope. Setting
``ORCHESTRATE_CRASH_AT=<name>`` makes `crash_point(name)` kill the process with SIGKILL (no
cleanup, no ``finally``, no atexit: what a power cut or the OOM killer does). Unset, it costs
one environment lookup. The names are listed in `POINTS`, so a test cannot wait for a point
that the code no longer has. ``<name>:interrupt`` sends SIGINT instead: a Ctrl-C at exactly
that place, to test what an interrupted command says and leaves.
"""

from __future__ import annotations

import os
import signal

ENV = "ORCHESTRATE_CRASH_AT"

#: Every point the product calls, in launch order.
POINTS = (
    "after-intent",  # the intent row is written; no cloud call yet
    "after-create-call",  # the create call returned; its cloud id is not stored yet
    "after-create",  # the instance runs and its row has the cloud id; no SSH yet
    "after-host-key",  # SSH is up and the host key pinned; host setup not started
    "in-host-step",  # a host step has started on the host and is running
    "after-setup",  # host setup and the notebook container are done; no tunnel yet
    "tunnel-started",  # the background tunnel runs; Jupyter not yet checked through it
)

#: The points only a cluster's launch (`--nodes N`) passes, besides the ones above (where
#: "after-create-call" is hit by the first node's create to return).
CLUSTER_POINTS = (
    "cluster-after-network",  # the cluster's network rule exists; no node created yet
    "cluster-after-token",  # every node runs and the cluster's secret file exists; no SSH
)


def crash_point(name: str) -> None:
    """SIGKILL this process when ``$ORCHESTRATE_CRASH_AT`` is `name`, SIGINT it when it is
    ``name:interrupt`` (tests only)."""
    wanted = os.environ.get(ENV)
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{name}:interrupt":
        os.kill(os.getpid(), signal.SIGINT)
