"""container-toolkit: the NVIDIA Container Toolkit wired into docker, with cgroupfs.

nvidia-docker (the seed's tool) is archived; the NVIDIA Container Toolkit replaces it:
install `nvidia-container-toolkit` from NVIDIA's apt repository (it is not in Ubuntu's
archive; https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/
install-guide.html), `nvidia-ctk runtime configure --runtime=docker`, restart docker, run
with `--gpus all`. docker's cgroup driver is set to cgroupfs too: with the systemd driver,
containers lose the GPU after a `systemctl daemon-reload` ("Failed to initialize NVML:
Unknown Error", NVIDIA/nvidia-container-toolkit#48).
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "container-toolkit"

_BODY = r"""
need_root
require_apt "the NVIDIA Container Toolkit"
if ! has nvidia-ctk; then
    keyring=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
    list=/etc/apt/sources.list.d/nvidia-container-toolkit.list
    if ! has curl || ! has gpg; then
        apt_update
        apt_get install --no-install-recommends curl ca-certificates gnupg
    fi
    log "adding NVIDIA's apt repository for the container toolkit ($REPO)"
    if [ ! -s "$keyring" ]; then
        curl -fsSL --retry 5 "$REPO/gpgkey" | gpg --batch --yes --dearmor -o "$keyring"
    fi
    if [ ! -s "$list" ]; then
        curl -fsSL --retry 5 "$REPO/stable/deb/nvidia-container-toolkit.list" |
            sed "s#deb https://#deb [signed-by=$keyring] https://#g" >"$list"
    fi
    # a new source: the stage's earlier `apt-get update` did not see it
    rm -f "${ORCHESTRATE_WORKDIR:-/nonexistent}/apt-updated"
    apt_update
    apt_get install --no-install-recommends nvidia-container-toolkit
fi
log "NVIDIA Container Toolkit $(nvidia-ctk --version | awk '/version/ { print $NF; exit }')"

daemon_json=${DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}
before=$(cat "$daemon_json" 2>/dev/null || true)
nvidia-ctk runtime configure --runtime=docker
has python3 || die "python3 is needed to edit $daemon_json"
python3 - "$daemon_json" <<'PY'
import json, os, sys

path = sys.argv[1]
try:
    with open(path) as f:
        config = json.load(f)
except FileNotFoundError:
    config = {}
opts = [o for o in config.get("exec-opts", []) if not o.startswith("native.cgroupdriver=")]
config["exec-opts"] = opts + ["native.cgroupdriver=cgroupfs"]
with open(path + ".orchestrate.tmp", "w") as f:
    json.dump(config, f, indent=4)
    f.write("\n")
os.replace(path + ".orchestrate.tmp", path)
PY
after=$(cat "$daemon_json")
if [ "$before" != "$after" ] || ! docker_up; then
    log "restarting docker to load $daemon_json"
    restart_docker
fi
state=$(docker info --format '{{.CgroupDriver}} {{range $k, $v := .Runtimes}}{{$k}} {{end}}')
case " $state " in
    *" nvidia "*) ;;
    *) die "docker does not list the nvidia runtime after configuring it: $state" ;;
esac
[ "${state%% *}" = cgroupfs ] || die "docker's cgroup driver is ${state%% *}, not cgroupfs"
log "docker: cgroup driver cgroupfs, nvidia runtime configured"
"""

REPO = "https://nvidia.github.io/libnvidia-container"


def needed(facts: Facts) -> bool:
    return facts.has_nvidia_gpu and (
        facts.toolkit_version is None
        or "nvidia" not in facts.docker.runtimes
        or facts.docker.cgroup_driver != "cgroupfs"
    )


def script(context: StepContext, facts: Facts) -> str:
    return step_script(_BODY, {"REPO": REPO})


STEP = HostStep(
    name=NAME,
    description="install the NVIDIA Container Toolkit, register its docker runtime, "
    "set docker's cgroup driver to cgroupfs, restart docker",
    needed=needed,
    script=script,
    # Needs docker, not the driver: `nvidia-ctk runtime configure` only edits docker's
    # config. It restarts docker, so the image pull waits for it (image.py).
    after=("docker",),
    stage=30,
)


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return [] if context.gpu is None else [STEP]
