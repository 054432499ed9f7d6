"""The ``ray`` host step: Ray's head or worker in a container of the notebook image.

Only on a cluster node (`StepContext.cluster` set); a lone instance gets no step. The
container runs ``ray start --block`` with the host's network (Ray's ports on the node's
internal address, the dashboard on the head's 127.0.0.1), restarts on failure, and
carries a label hashing its configuration, the image's id and the token's hash, so a
second launch finds nothing to do and a new token or image replaces the container.

A worker needs no ordering against its head: ``ray start --address`` keeps retrying the
head's GCS in its own process (measured on the bed: a worker started 10 to 40 s before its
head ran on without a restart and finished starting seconds after the head's port opened,
sooner than a worker started only once the head answered, whose own start-up then came
after the head's). Docker's restart policy is for a Ray that exits later (a crash, a
reboot), not for the first start.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from orchestrate.core.api.hoststeps import ClusterContext, Facts, HostStep, StepContext
from orchestrate.core.api.templates import heredoc_delimiter
from orchestrate.plugins.host.ray import layout
from orchestrate.plugins.host.shell import keep_or_replace_container, step_script

NAME = "ray"

#: The line a launch stops with when the image cannot run Ray with token authentication.
IMAGES_THAT_WORK = (
    "use an image with JupyterLab and Ray 2.60 or newer on every node: a Jupyter Docker "
    "Stacks image with Ray added (FROM quay.io/jupyter/pytorch-notebook:cuda12-latest, "
    "RUN pip install 'ray[default]==2.60.0'), or rayproject/ray:2.60.0-gpu with "
    "'pip install jupyterlab'"
)


#: The oldest Ray with token authentication, the one IMAGES_THAT_WORK names: an older Ray
#: would ignore ``RAY_AUTH_MODE`` and serve without a token.
MIN_RAY = (2, 60)

#: Run by the image's ``python3`` in a throwaway container: prints Ray's version when the
#: image's ``ray`` command belongs to a Ray distribution of at least MIN_RAY, else fails.
#: It reads the package's metadata and never imports Ray: importing Ray (what ``ray
#: --version`` does) took 7 s of CPU per node on the bed against 0.5 s for this.
RAY_CHECK = f"""import importlib.metadata, os, re, shutil, sys
dist = importlib.metadata.distribution("ray")
command = shutil.which("ray")
ours = {{os.path.realpath(dist.locate_file(f)) for f in dist.files or () if f.name == "ray"}}
if not command or os.path.realpath(command) not in ours:
    sys.exit("the ray command is not this Ray's")
if tuple(int(n) for n in re.findall(r"[0-9]+", dist.version)[:2]) < {MIN_RAY!r}:
    sys.exit(f"Ray {{dist.version}} has no token authentication")
print(dist.version)
"""


def container_name(cluster: ClusterContext) -> str:
    return layout.HEAD_CONTAINER if cluster.is_head else layout.WORKER_CONTAINER


def ray_start_args(cluster: ClusterContext) -> list[str]:
    """``ray start`` arguments: every port pinned, so the cluster rule is the whole story."""
    args = [
        "start",
        "--block",
        f"--node-ip-address={cluster.node_address}",
        f"--object-manager-port={layout.OBJECT_MANAGER_PORT}",
        f"--node-manager-port={layout.NODE_MANAGER_PORT}",
        f"--dashboard-agent-grpc-port={layout.DASHBOARD_AGENT_GRPC_PORT}",
        f"--dashboard-agent-listen-port={layout.DASHBOARD_AGENT_LISTEN_PORT}",
        f"--runtime-env-agent-port={layout.RUNTIME_ENV_AGENT_PORT}",
        f"--metrics-export-port={layout.METRICS_EXPORT_PORT}",
        f"--min-worker-port={layout.MIN_WORKER_PORT}",
        f"--max-worker-port={layout.MAX_WORKER_PORT}",
        "--disable-usage-stats",
    ]
    if cluster.is_head:
        args += [
            "--head",
            f"--port={cluster.ray_port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={cluster.dashboard_port}",
            f"--ray-client-server-port={layout.CLIENT_SERVER_PORT}",
        ]
    else:
        args.append(f"--address={cluster.head_address}:{cluster.ray_port}")
    return args


def config_hash(context: StepContext, cluster: ClusterContext) -> str:
    """What, changed, needs a new container (the image id and token hash join on the host)."""
    data = {
        "image": context.notebook_image,
        "args": ray_start_args(cluster),
        "gpu": context.gpu is not None,
        "env": layout.env_lines(),
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def probe(cluster: ClusterContext) -> str:
    """``LABEL|STATE|TOKENHASH|IMAGEID`` in the probe's round trip (fields empty when absent)."""
    name = shlex.quote(container_name(cluster))
    token_file = shlex.quote(cluster.token_file)
    fmt = shlex.quote('{{index .Config.Labels "' + layout.CONFIG_LABEL + '"}}|{{.State.Status}}')
    return (
        f"printf '%s|' \"$(as_root docker inspect --type container --format {fmt} {name} "
        "2>/dev/null || printf '|')\"; "
        f"printf '%s|' \"$(as_root sha256sum -- {token_file} 2>/dev/null | cut -c1-16)\"; "
        "as_root docker image inspect --format '{{.Id}}' \"$image\" 2>/dev/null | cut -c8-23"
    )


def wanted_label(config: str, token_hash: str, image_id: str) -> str:
    return f"{config}-{token_hash}-{image_id}"


_BODY = r"""
need_root
wait_docker 90
uid=$(id -u -- "$ORCHESTRATE_LOGIN_USER")
gid=$(id -g -- "$ORCHESTRATE_LOGIN_USER")
# Checked before anything is replaced: a wrong image leaves a running cluster as it was.
# The image must run Ray with token authentication (RAY_CHECK: from Ray's metadata).
if ! version=$(docker run --rm --network none --user "$uid:$gid" -e HOME=/tmp \
    --entrypoint python3 -- "$IMAGE" -c "$CHECK" 2>/dev/null); then
    version=""
fi
[ -n "$version" ] || die "the image $IMAGE has no Ray with token authentication; $WORKS"
@PREPARE@
token_hash=$(sha256sum -- "$token_file" | cut -c1-16)
image_id=$(docker image inspect --format '{{.Id}}' -- "$IMAGE" | cut -c8-23)
wanted="$CONFIG-$token_hash-$image_id"
@KEEP@envfile=$(mktemp)
trap 'rm -f "$envfile"' EXIT
cat >"$envfile" <<'@DELIM@'
@ENV@@DELIM@
# 30% of memory for Ray's object store in /dev/shm, as Ray's own docker advice says.
shm_kb=$(awk '/^MemTotal:/ {print int($2 * 3 / 10)}' /proc/meminfo)
gpu_flag=()
if [ "$GPU" = yes ]; then gpu_flag=(--gpus all); fi
ray_args=(@RAYARGS@)
docker run -d --name "$name" --restart unless-stopped --label "@LABEL@=$wanted" \
    --network host --shm-size "${shm_kb}k" "${gpu_flag[@]}" \
    --user "$uid:$gid" -e HOME=/tmp --env-file "$envfile" @MOUNTS@ \
    --entrypoint ray -- "$IMAGE" "${ray_args[@]}" >/dev/null
log "ray $version $ROLE running in $name from $IMAGE"
"""


def script(context: StepContext, facts: Facts) -> str:
    """The step's bash. Values enter as quoted assignments (`step_script`); the env file's
    here-document has a delimiter no value contains."""
    cluster = context.cluster
    assert cluster is not None  # the step exists only on cluster nodes
    env_text = layout.env_lines()
    delimiter = heredoc_delimiter(env_text, "ORCHESTRATE_RAY_ENV")
    body = (
        _BODY.replace("@PREPARE@", layout.PREPARE_BASH)
        .replace("@MOUNTS@", layout.mount_options(cluster))
        .replace("@KEEP@", keep_or_replace_container(layout.CONFIG_LABEL, "ray"))
        .replace("@LABEL@", layout.CONFIG_LABEL)
        .replace("@ENV@", env_text)
        .replace("@DELIM@", delimiter)
        .replace("@RAYARGS@", " ".join(shlex.quote(a) for a in ray_start_args(cluster)))
    )
    gpu = context.gpu is not None and facts.has_nvidia_gpu
    return step_script(
        body,
        {
            "name": container_name(cluster),
            "IMAGE": context.notebook_image,
            "ROLE": f"{cluster.role} (node {cluster.index} of {cluster.size})",
            "CONFIG": config_hash(context, cluster),
            "GPU": "yes" if gpu else "no",
            "WORKS": IMAGES_THAT_WORK,
            "CHECK": RAY_CHECK,
            "token_file": cluster.token_file,
            "ray_dir": layout.host_dir(cluster),
        },
    )


def ray_step(context: StepContext) -> HostStep:
    cluster = context.cluster
    assert cluster is not None
    config = config_hash(context, cluster)

    def needed(facts: Facts) -> bool:
        fields = facts.extra.get(NAME, "").strip().split("|")
        if len(fields) != 4 or not fields[2] or not fields[3]:
            return True
        label, state, token_hash, image_id = fields
        return state != "running" or label != wanted_label(config, token_hash, image_id)

    return HostStep(
        name=NAME,
        description=f"Ray {cluster.role} container on {cluster.node_address}",
        needed=needed,
        script=script,
        after=("docker",),
        after_optional=("image", "verify", "container-toolkit"),
        stage=75,
        probe=probe(cluster),
    )
