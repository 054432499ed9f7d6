"""The notebook container step: Jupyter, detached, on the host's 127.0.0.1.

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
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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
    env_text = (
        f"JUPYTER_TOKEN={context.token}\n"
        f"NOTEBOOK_ARGS=--ServerApp.root_dir={context.notebooks_container_dir}\n"
    )
    delimiter = heredoc_delimiter(env_text, "ORCHESTRATE_ENV")
    return f"""set -euo pipefail
name={shlex.quote(context.notebook_container)}
label={shlex.quote(f"{NAME_LABEL}={context.instance}")}
image={shlex.quote(context.notebook_image)}
wanted={shlex.quote(config_hash(context))}
container_dir={shlex.quote(context.notebooks_container_dir)}
port={int(context.remote_port)}
host_dir={host_dir_expression(context.notebooks_host_dir)}
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
if docker container inspect -- "$name" >/dev/null 2>&1; then
    current=$(docker inspect --format '{{{{index .Config.Labels "{CONFIG_LABEL}"}}}}' -- "$name")
    if [ "$current" = "$wanted" ]; then
        docker start -- "$name" >/dev/null
        echo "notebook container $name started again"
        exit 0
    fi
    echo "notebook container $name has another configuration: replacing it"
    docker rm -f -- "$name" >/dev/null
fi
envfile=$(mktemp)
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
    -p "127.0.0.1:$port:{CONTAINER_PORT}" \\
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
        after_optional=("verify", "image"),
        stage=80,
        probe=PROBE,
    )


@hookimpl
def orchestrate_host_steps(context: StepContext) -> list[HostStep]:
    return [notebook_step(context)]
