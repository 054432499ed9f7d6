"""image-pull: the notebook image, pulled before the notebook step needs it.

Pulling is the slow part of a first launch (gigabytes for CUDA framework images), so it is a
step of its own with retries and its own progress line. A Kepler host's R470 driver runs CUDA
11.4 at most: an image built for a newer CUDA would start and then fail inside the notebook,
so the mismatch is a warning before anything runs (from the tag, or the image's CUDA_VERSION
when it is already on the host) and again after the pull.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api import gpu_table
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "image"

_BODY = r"""
need_root
wait_docker 90
attempt=1
# Present already (a re-run at boot in startup-script mode): nothing to pull.
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE already present"
else
    until docker pull "$IMAGE"; do
        [ "$attempt" -ge 4 ] && die "docker pull $IMAGE failed $attempt times"
        log "docker pull failed; retrying in $((attempt * 15)) s"
        sleep $((attempt * 15))
        attempt=$((attempt + 1))
    done
fi
cuda=$(docker image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" |
    sed -n 's/^CUDA_VERSION=//p' | head -n 1)
[ -n "$cuda" ] && log "image CUDA_VERSION=$cuda"
if [ -n "$cuda" ] && [ -n "$MAX_CUDA" ]; then
    want=$(printf '%s' "$cuda" | cut -d. -f1,2)
    top=$(printf '%s\n%s\n' "$want" "$MAX_CUDA" | sort -V | tail -n 1)
    if [ "$want" != "$MAX_CUDA" ] && [ "$top" = "$want" ]; then
        warn "$IMAGE is built for CUDA $want but $DRIVER runs CUDA $MAX_CUDA at most"
    fi
fi
log "image $IMAGE is present"
"""


def driver_limit(facts: Facts) -> tuple[str, str] | None:
    """(max CUDA, which driver) for this host: the loaded driver's, or the one the driver
    step will install; None for a host without an NVIDIA GPU."""
    if not facts.has_nvidia_gpu:
        return None
    if facts.driver.loaded:
        cuda = gpu_table.max_cuda_for_driver(facts.driver.loaded)
        if cuda:
            return cuda, f"driver {facts.driver.loaded}"
    decision = gpu_table.decide(facts.gpus)
    if decision is None:
        return None
    return decision.row.max_cuda, f"the R{decision.row.branch} driver"


def image_cuda_warning(image: str, facts: Facts) -> str | None:
    """The warning for an image that needs a newer CUDA than the host's driver runs."""
    limit = driver_limit(facts)
    wanted = (facts.image.cuda_version if facts.image.present else None) or (
        gpu_table.image_cuda_from_tag(image)
    )
    if limit is None or wanted is None:
        return None
    max_cuda, driver = limit
    if gpu_table.cuda_newer(wanted, max_cuda):
        return (
            f"{image} needs CUDA {'.'.join(map(str, gpu_table.version_tuple(wanted)))} but "
            f"{driver} runs CUDA {max_cuda} at most; pick an image built for CUDA {max_cuda}"
        )
    return None


def steps_for(context: StepContext) -> list[HostStep]:
    image = context.notebook_image

    def needed(facts: Facts) -> bool:
        return not facts.image.present

    def script(ctx: StepContext, facts: Facts) -> str:
        limit = driver_limit(facts)
        return step_script(
            _BODY,
            {
                "IMAGE": image,
                "MAX_CUDA": limit[0] if limit else "",
                "DRIVER": limit[1] if limit else "",
            },
        )

    def warnings(facts: Facts) -> list[str]:
        warning = image_cuda_warning(image, facts)
        return [warning] if warning else []

    return [
        HostStep(
            name=NAME,
            description=f"pull the notebook image {image}",
            needed=needed,
            script=script,
            after=("docker",),
            # the toolkit restarts docker, which would break a pull in progress
            after_optional=("container-toolkit",),
            stage=35,
            warnings=warnings,
        )
    ]


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return steps_for(context)
