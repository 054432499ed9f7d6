"""verify: a throw-away CUDA container runs nvidia-smi with `--gpus all`.

The driver is not ready the instant a VM boots, so the check is retried until it passes or a
deadline does. The container's nvidia-smi is the host driver's, mounted in by the toolkit;
`NVIDIA_DISABLE_REQUIRE=1` lets one small CUDA base image serve every driver branch (an R470
host could not start a CUDA 12 image otherwise). The output is parsed for the summary line.
``context.extra`` may set ``verify_image``, ``verify_deadline_s`` and ``verify_retry_s``.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api import gpu_table
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "verify"
DEFAULT_IMAGE = "nvidia/cuda:12.2.2-base-ubuntu22.04"
DEADLINE_S = 600
RETRY_S = 10

_BODY = r"""
need_root
wait_docker 90
deadline=$((SECONDS + DEADLINE_S))
attempt=0
while :; do
    attempt=$((attempt + 1))
    out=$(docker run --rm --gpus all -e NVIDIA_DISABLE_REQUIRE=1 "$IMAGE" nvidia-smi 2>&1) ||
        true
    case $out in
        *"Driver Version"*)
            printf '%s\n' "$out"
            log "the GPU works inside a container ($IMAGE)"
            exit 0
            ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        printf '%s\n' "$out" >&2
        die "no GPU inside a container after ${DEADLINE_S} s ($attempt tries)"
    fi
    log "GPU not ready in a container yet (try $attempt): $(printf '%s\n' "$out" | tail -n 1)"
    sleep "$RETRY_S"
done
"""


def needed(facts: Facts) -> bool:
    return facts.has_nvidia_gpu and not facts.gpu_ready()


def summarize(output: str, facts: Facts) -> str | None:
    report = gpu_table.parse_nvidia_smi(output)
    return f"GPU in a container: {report.summary()}" if report.gpus else None


def steps_for(context: StepContext) -> list[HostStep]:
    if context.gpu is None:
        return []
    image = str(context.extra.get("verify_image", DEFAULT_IMAGE))
    deadline_s = int(context.extra.get("verify_deadline_s", DEADLINE_S))
    retry_s = int(context.extra.get("verify_retry_s", RETRY_S))

    def script(ctx: StepContext, facts: Facts) -> str:
        return step_script(_BODY, {"IMAGE": image, "DEADLINE_S": deadline_s, "RETRY_S": retry_s})

    return [
        HostStep(
            name=NAME,
            description=f"run nvidia-smi in a throw-away CUDA container ({image}) with --gpus all",
            needed=needed,
            script=script,
            after=("container-toolkit",),
            after_optional=("nvidia-driver", "docker"),
            follows_changes=True,
            stage=40,
            summarize=summarize,
        )
    ]


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return steps_for(context)
