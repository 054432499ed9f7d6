"""Where Ray lives on a cluster node: its ports, its folders, and how it finds the token.

Shared by the Ray containers (`step`) and the notebook container on the head, which must
agree: a driver in a notebook kernel talks to the head's raylet through Unix sockets in
Ray's temp folder, so both containers mount the same host folder at ``/tmp/ray`` and run
as the same uid (the login user's, which is also the notebook's ``NB_UID``).

Token authentication (Ray 2.60, ``ray/_private/authentication``): ``RAY_AUTH_MODE=token``
switches it on, and the token is read from ``RAY_AUTH_TOKEN`` (the value),
``RAY_AUTH_TOKEN_PATH`` (a file) or ``~/.ray/auth_token``. We set the mode explicitly
everywhere: ``ray start --address`` and ``ray.init(address=...)`` never turn it on by
themselves, only a head or a local cluster found automatically does. The value stays in a
file: core's root-only ``ClusterContext.token_file`` is copied, whitespace stripped, to a
folder readable only by the login uid and mounted read-only, and ``RAY_AUTH_TOKEN_PATH``
points there. No command line or container environment holds it.
"""

from __future__ import annotations

import shlex

from orchestrate.core.api.hoststeps import ClusterContext

#: Under it, per node, the folder of everything Ray-related that orchestrate makes (0700,
#: the login user's): named for the cluster and the node's index, so nodes that share one
#: file system (the test bed's, several nodes on one machine) never share Ray's sockets.
HOST_ROOT = "/var/lib/orchestrate/ray"
#: In HOST_DIR: the token copy (folder ``auth``) and Ray's temp folder (``tmp``), which is
#: also where an idle head's stop request reaches a worker's autostop agent (see the agent).
AUTH_SUBDIR = "auth"
TMP_SUBDIR = "tmp"
#: Where containers see the token folder, and the token file in it.
CONTAINER_AUTH_DIR = "/run/orchestrate/ray"
CONTAINER_TOKEN = f"{CONTAINER_AUTH_DIR}/token"
#: Ray's default temp folder; mounted from the host so drivers and raylet share sockets.
CONTAINER_TMP = "/tmp/ray"

HEAD_CONTAINER = "orchestrate-ray-head"
WORKER_CONTAINER = "orchestrate-ray-worker"
#: The label holding the container's configuration hash (never the token, only its hash).
CONFIG_LABEL = "orchestrate.ray"

#: Ports pinned so the firewall story is known: all are reachable between the cluster's
#: nodes only (the cluster rule), never from outside. The GCS port and the dashboard port
#: come from `ClusterContext` (6379 and 8265 by default; the dashboard listens on the
#: head's 127.0.0.1 and is reached through the tunnel).
OBJECT_MANAGER_PORT = 8076
NODE_MANAGER_PORT = 8077
DASHBOARD_AGENT_GRPC_PORT = 8078
RUNTIME_ENV_AGENT_PORT = 8079
METRICS_EXPORT_PORT = 8080
DASHBOARD_AGENT_LISTEN_PORT = 52365
CLIENT_SERVER_PORT = 10001
MIN_WORKER_PORT = 10002
MAX_WORKER_PORT = 10999


def env_lines(address: str | None = None) -> str:
    """Environment for a Ray process or a driver, as env-file lines (no secret in them).

    ``address`` (``HOST:PORT``) becomes ``RAY_ADDRESS``: a notebook kernel's ``ray.init()``
    with no arguments then joins the cluster.
    """
    lines = [
        "RAY_AUTH_MODE=token",
        f"RAY_AUTH_TOKEN_PATH={CONTAINER_TOKEN}",
        "RAY_USAGE_STATS_ENABLED=0",
    ]
    if address:
        lines.append(f"RAY_ADDRESS={address}")
    return "".join(line + "\n" for line in lines)


def host_dir(cluster: ClusterContext) -> str:
    """This node's Ray folder on the host."""
    return f"{HOST_ROOT}/{cluster.name}-{cluster.index}"


def tmp_dir(cluster: ClusterContext) -> str:
    """This node's Ray temp folder on the host: what its containers mount at CONTAINER_TMP,
    and where its autostop agent finds the head's stop request."""
    return f"{host_dir(cluster)}/{TMP_SUBDIR}"


#: Bash that makes the node's folder ("$ray_dir") for the login user and refreshes the
#: token copy from "$token_file"; it expects ``ray_dir``, ``uid``, ``gid`` and ``token_file``
#: set. The copy is written under another name and renamed, so a running container never
#: reads half a token.
PREPARE_BASH = f"""if [ ! -s "$token_file" ]; then
    echo "error: the cluster token $token_file is missing or empty" >&2
    exit 1
fi
install -d -m 755 -- {HOST_ROOT}
install -d -m 700 -o "$uid" -g "$gid" -- "$ray_dir" "$ray_dir/{AUTH_SUBDIR}" \\
    "$ray_dir/{TMP_SUBDIR}"
(umask 077 && tr -d '[:space:]' <"$token_file" >"$ray_dir/{AUTH_SUBDIR}/token.new")
chown -- "$uid:$gid" "$ray_dir/{AUTH_SUBDIR}/token.new"
chmod 400 -- "$ray_dir/{AUTH_SUBDIR}/token.new"
mv -f -- "$ray_dir/{AUTH_SUBDIR}/token.new" "$ray_dir/{AUTH_SUBDIR}/token"
"""


def mount_options(cluster: ClusterContext) -> str:
    """``docker run`` options (shell words) mounting the token folder read-only and Ray's
    temp folder."""
    base = host_dir(cluster)
    return " ".join(
        shlex.quote(word)
        for word in (
            "-v", f"{base}/{AUTH_SUBDIR}:{CONTAINER_AUTH_DIR}:ro",
            "-v", f"{tmp_dir(cluster)}:{CONTAINER_TMP}",
        )
    )  # fmt: skip
