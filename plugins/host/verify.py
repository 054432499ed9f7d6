"""verify: the GPU works inside a throw-away container: nvidia-smi, then a CUDA context.

The driver is not ready the instant a VM boots, so the check is retried until it passes or a
deadline does. No CUDA image: NVIDIA deletes CUDA image tags once their driver branch is out
of support, and the toolkit mounts the host driver's nvidia-smi and libcuda into any image
(NVIDIA's own sample workload runs plain ``ubuntu``). So the container is the notebook image,
which the image step has pulled already and which has python3: ``nvidia-smi`` proves the
device is visible, and ``cuInit`` + ``cuCtxCreate`` on each GPU through ctypes proves CUDA
works (on NVSwitch shapes nvidia-smi works while CUDA fails until nvidia-fabricmanager runs).
`NVIDIA_DISABLE_REQUIRE=1` keeps an image's CUDA requirement from refusing an older driver
branch (an R470 host). An image without python3 gets the nvidia-smi check only, and says so.
``context.extra`` may set ``verify_image``, ``verify_deadline_s`` and ``verify_retry_s``.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api import gpu_table
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.core.api.provider import NAME_LABEL
from orchestrate.plugins.host.shell import step_script

NAME = "verify"
DEADLINE_S = 600
RETRY_S = 10
CONTEXT_OK = "CUDA context: ok"
CONTEXT_SKIPPED = "CUDA context: not checked (no python3 in the image)"

#: Runs in the container with python3 and the libcuda the toolkit mounts: no CUDA toolkit.
CUDA_CHECK = f"""
import ctypes
cuda = ctypes.CDLL("libcuda.so.1")
def check(result, what):
    if result:
        hint = " (NVSwitch host: is nvidia-fabricmanager running?)" if result == 802 else ""
        raise SystemExit(f"CUDA context: {{what}} failed with CUDA error {{result}}{{hint}}")
check(cuda.cuInit(0), "cuInit")
count = ctypes.c_int()
check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
for index in range(count.value):
    device, context = ctypes.c_int(), ctypes.c_void_p()
    check(cuda.cuDeviceGet(ctypes.byref(device), index), "cuDeviceGet")
    check(cuda.cuCtxCreate_v2(ctypes.byref(context), 0, device), "cuCtxCreate")
    check(cuda.cuCtxDestroy_v2(context), "cuCtxDestroy")
print(f"{CONTEXT_OK} on {{count.value}} GPU(s)")
"""

_BODY = r"""
need_root
wait_docker 90
deadline=$((SECONDS + DEADLINE_S))
attempt=0
while :; do
    attempt=$((attempt + 1))
    # $0 of the inner sh is the CUDA check, passed as an argument: never re-quoted.
    # shellcheck disable=SC2016
    out=$(docker run --rm --label "$LABEL" --gpus all -e NVIDIA_DISABLE_REQUIRE=1 \
        -e NVIDIA_DRIVER_CAPABILITIES=compute,utility "$IMAGE" \
        sh -c 'nvidia-smi && if command -v python3 >/dev/null; then python3 -c "$0";
            else echo "$1"; fi' "$CUDA_CHECK" "$SKIPPED" 2>&1) || true
    case $out in
        *"Driver Version"*"CUDA context: "[on]*)
            printf '%s
' "$out"
            log "the GPU works inside a container ($IMAGE)"
            exit 0
            ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        printf '%s
' "$out" >&2
        die "no working GPU inside a container after ${DEADLINE_S} s ($attempt tries)"
    fi
    log "GPU not ready in a container yet (try $attempt): $(printf '%s
' "$out" | tail -n 1)"
    sleep "$RETRY_S"
done
"""


def needed(facts: Facts) -> bool:
    return facts.has_nvidia_gpu and not facts.gpu_ready()


def summarize(output: str, facts: Facts) -> str | None:
    report = gpu_table.parse_nvidia_smi(output)
    if not report.gpus:
        return None
    cuda = "CUDA context created" if CONTEXT_OK in output else "CUDA context not checked"
    return f"GPU in a container: {report.summary()}; {cuda}"


def steps_for(context: StepContext) -> list[HostStep]:
    if context.gpu is None:
        return []
    image = str(context.extra.get("verify_image", context.notebook_image))
    deadline_s = int(context.extra.get("verify_deadline_s", DEADLINE_S))
    retry_s = int(context.extra.get("verify_retry_s", RETRY_S))

    def script(ctx: StepContext, facts: Facts) -> str:
        return step_script(
            _BODY,
            {
                "IMAGE": image,
                "LABEL": f"{NAME_LABEL}={ctx.instance}",  # `stop`/`down` find it by it
                "DEADLINE_S": deadline_s,
                "RETRY_S": retry_s,
                "SKIPPED": CONTEXT_SKIPPED,
                "CUDA_CHECK": CUDA_CHECK,
            },
        )

    return [
        HostStep(
            name=NAME,
            description=f"run nvidia-smi and create a CUDA context in a throw-away container "
            f"({image}) with --gpus all",
            needed=needed,
            script=script,
            after=("container-toolkit",),
            after_optional=("nvidia-driver", "nvidia-fabricmanager", "docker", "image"),
            follows_changes=True,
            stage=40,
            summarize=summarize,
        )
    ]


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return steps_for(context)
