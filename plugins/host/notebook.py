"""The notebook container step: Jupyter, detached, on the host's 127.0.0.1.

On a cluster's head, the container shares the host's network (and process namespace)
instead, with Jupyter bound to 127.0.0.1 on the same port: a kernel's Ray driver must be
reachable by the workers on the head's internal address, and it joins the cluster with a
plain ``ray.init()`` (``RAY_ADDRESS`` and the token file are in its environment and mounts,
as `host.ray`'s `layout` describes). A cluster's workers run no Jupyter at all.

The container carries a label with a hash of its configuration (image, ports, folders, GPU,
token). The probe reads that label, so a relaunch with the same profile finds nothing to do,
and a changed profile replaces the container while the notebooks folder stays on the host.
"""

from __future__ import annotations

import hashlib
import json
import shlex

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.core.api.provider import NAME_LABEL
from orchestrate.core.api.templates import heredoc_delimiter
from orchestrate.plugins.host.ray import layout as ray_layout
from orchestrate.plugins.host.shell import keep_or_replace_container

CONFIG_LABEL = "orchestrate.config"
#: The port Jupyter listens on inside the container (every common image uses 8888).
CONTAINER_PORT = 8888

# Reads the running container's config label in the probe's round trip.
PROBE = (
    "as_root docker inspect --type container --format "
    "'{{index .Config.Labels \"" + CONFIG_LABEL + '"}}\' "$container" 2>/dev/null || true'
)


def config_hash(context: StepContext) -> str:
    """Everything that, changed, needs a new container; the token only as its own hash."""
    data = {
        "image": context.notebook_image,
        "remote_port": context.remote_port,
        "host_dir": context.notebooks_host_dir,
        "container_dir": context.notebooks_container_dir,
        "gpu": context.gpu is not None,
        "token": hashlib.sha256(context.token.encode()).hexdigest(),
    }
    if context.cluster is not None:
        data["ray"] = ray_address(context)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def ray_address(context: StepContext) -> str | None:
    """``HEAD:PORT`` of the cluster this host heads, None on a lone instance."""
    cluster = context.cluster
    if cluster is None or not cluster.is_head:
        return None
    return f"{cluster.head_address}:{cluster.ray_port}"


def host_dir_expression(path: str) -> str:
    """The notebooks folder as a bash word; `~` is the login user's home, not root's."""
    if path == "~" or path.startswith("~/"):
        return (
            '"$ORCHESTRATE_LOGIN_HOME"' + shlex.quote(path[1:])
            if path != "~"
            else ('"$ORCHESTRATE_LOGIN_HOME"')
        )
    return shlex.quote(path)


def script(context: StepContext, facts: Facts) -> str:
    """Start (or replace) the notebook container; the token goes through a 0600 env file,
    never a command line that `ps` would show.

    Every value from the profile enters as a shell-quoted assignment and is used only as
    "$variable", so no value is ever parsed as shell; the env file's here-document has a
    delimiter that no value can contain (`heredoc_delimiter`).
    """
    gpu_flag = "--gpus all " if context.gpu is not None and facts.has_nvidia_gpu else ""
    address = ray_address(context)
    notebook_args = f"--ServerApp.root_dir={context.notebooks_container_dir}"
    network = f'-p "127.0.0.1:$port:{CONTAINER_PORT}"'
    if address is not None and context.cluster is not None:
        # The host's network: Jupyter itself must bind to loopback, on the wanted port.
        notebook_args += (
            f" --ServerApp.ip=127.0.0.1 --ServerApp.port={int(context.remote_port)}"
            " --ServerApp.port_retries=0"
        )
        # The ray step (which comes first) made the token copy and Ray's temp folder. A
        # driver finds its node's raylet among the processes it can see (Ray 2.60 reads
        # `ps`), so the notebook shares the host's process namespace too.
        network = f"--network host --pid host {ray_layout.mount_options(context.cluster)}"
    # The published port's variable, only where a port is published.
    port_line = "" if address is not None else f"port={int(context.remote_port)}\n"
    env_text = f"JUPYTER_TOKEN={context.token}\nNOTEBOOK_ARGS={notebook_args}\n" + (
        ray_layout.env_lines(address) if address else ""
    )
    delimiter = heredoc_delimiter(env_text, "ORCHESTRATE_ENV")
    return f"""set -euo pipefail
name={shlex.quote(context.notebook_container)}
label={shlex.quote(f"{NAME_LABEL}={context.instance}")}
image={shlex.quote(context.notebook_image)}
wanted={shlex.quote(config_hash(context))}
container_dir={shlex.quote(context.notebooks_container_dir)}
{port_line}host_dir={host_dir_expression(context.notebooks_host_dir)}
# A folder that exists is used as it is: chowning it could hand the login user a folder
# that belongs to someone else. Only a folder made here is given to the login user.
if [ ! -e "$host_dir" ]; then
    mkdir -p -- "$host_dir"
    chown -- "$ORCHESTRATE_LOGIN_USER": "$host_dir"
fi
# Jupyter runs as the login user (NB_UID below): checkpoint folders a container running as
# root made in the user's own folder before would make every save fail; they are given back.
if [ "$(stat -c %u -- "$host_dir")" = "$(id -u -- "$ORCHESTRATE_LOGIN_USER")" ]; then
    find "$host_dir" -xdev -type d -name .ipynb_checkpoints -user 0 \
        -exec chown -R -- "$ORCHESTRATE_LOGIN_USER": {{}} +
fi
{keep_or_replace_container(CONFIG_LABEL, "notebook")}envfile=$(mktemp)
chmod 600 "$envfile"
trap 'rm -f "$envfile"' EXIT
cat >"$envfile" <<'{delimiter}'
{env_text}{delimiter}
uid=$(id -u -- "$ORCHESTRATE_LOGIN_USER")
gid=$(id -g -- "$ORCHESTRATE_LOGIN_USER")
# --user root with NB_UID/NB_GID: Jupyter Docker Stacks images then run Jupyter as the login
# user's uid, so notebooks written to the host folder belong to that user.
docker run -d --name "$name" --restart unless-stopped \\
    --label "{CONFIG_LABEL}=$wanted" --label "$label" \\
    {network} \\
    -v "$host_dir:$container_dir" \\
    --env-file "$envfile" --user root -e NB_UID="$uid" -e NB_GID="$gid" \\
    {gpu_flag}-- "$image" >/dev/null
echo "notebook container $name running from $image"
"""


def notebook_step(context: StepContext) -> HostStep:
    wanted = config_hash(context)

    def needed(facts: Facts) -> bool:
        if facts.container.state != "running":
            return True
        return facts.extra.get("notebook", "").strip() != wanted

    return HostStep(
        name="notebook",
        description="Jupyter container with the host notebooks folder, on 127.0.0.1",
        needed=needed,
        script=script,
        after=("docker",),
        after_optional=("verify", "image", "ray"),
        stage=80,
        probe=PROBE,
    )


@hookimpl
def orchestrate_host_steps(context: StepContext) -> list[HostStep]:
    """The notebook container, except on a cluster's workers (the head has the notebook)."""
    if context.cluster is not None and not context.cluster.is_head:
        return []
    return [notebook_step(context)]
