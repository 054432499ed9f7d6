"""docker: the container engine, installed when missing and started when stopped.

Needed by every host, CPU notebook hosts included. On Ubuntu and Debian it installs the
distribution's own `docker.io`: no third-party repository or signing key to trust, security
fixes through the normal archive, and new enough (>= 19.03) for `docker run --gpus` once the
NVIDIA Container Toolkit is installed. The step runs as root (the runner's `sudo -n`).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "docker"

_BODY = r"""
need_root
if has docker; then
    log "docker already installed: $(docker --version)"
else
    require_apt docker
    log "installing docker.io from the distribution's archive (no third-party repository or \
key; enough for --gpus with the NVIDIA Container Toolkit)"
    apt_update
    apt_get install --no-install-recommends docker.io
fi
if docker_up; then
    log "docker is running (server $(docker info --format '{{.ServerVersion}}'))"
    exit 0
fi
log "starting docker"
if [ -d /run/systemd/system ]; then
    systemctl enable --now docker
else
    service docker start
fi
wait_docker 90
log "docker is running (server $(docker info --format '{{.ServerVersion}}'))"
"""


def needed(facts: Facts) -> bool:
    return not (facts.docker.installed and facts.docker.running)


def script(context: StepContext, facts: Facts) -> str:
    return step_script(_BODY)


STEP = HostStep(
    name=NAME,
    description="install docker (Ubuntu/Debian docker.io) if missing and make sure it runs",
    needed=needed,
    script=script,
    # Not after the driver: the image pull needs docker alone, and starts while the driver
    # installs (the driver's apt work comes after docker's and the toolkit's instead).
    after_optional=("gpu-check",),
    stage=20,
)


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return [STEP]
