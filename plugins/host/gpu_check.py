"""gpu-check: a GPU launch on a host without an NVIDIA GPU stops here, clearly.

The seed script's first check ("confirm the instance has an NVIDIA GPU, exit otherwise").
A profile without an accelerator (a CPU notebook host, a real option) gets no such step.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "gpu-check"

# Reads sysfs like the probe, so the answer does not depend on pciutils being installed.
_BODY = r"""
found=0
for dev in /sys/bus/pci/devices/*; do
    [ -r "$dev/vendor" ] || continue
    read -r vendor <"$dev/vendor"
    read -r class <"$dev/class"
    if [ "$vendor" = 0x10de ] && [ "${class#0x03}" != "$class" ]; then
        found=$((found + 1))
        log "NVIDIA GPU at ${dev##*/}"
    fi
done
if [ "$found" -eq 0 ]; then
    die "no NVIDIA GPU on this host, but the profile asks for $WANTED; launch it with the \
accelerator attached, or set no accelerator in the profile for a CPU notebook host"
fi
log "$found NVIDIA GPU(s) found"
"""


def steps_for(context: StepContext) -> list[HostStep]:
    """The gpu-check step for a GPU launch; nothing for a CPU host."""
    gpu = context.gpu
    if gpu is None:
        return []
    wanted = f"{gpu.name}:{gpu.count}"

    def needed(facts: Facts) -> bool:
        return not facts.has_nvidia_gpu

    def script(ctx: StepContext, facts: Facts) -> str:
        return step_script(_BODY, {"WANTED": wanted})

    return [
        HostStep(
            name=NAME,
            description=f"check the host has the NVIDIA GPU the profile asks for ({wanted})",
            needed=needed,
            script=script,
            stage=0,
        )
    ]


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return steps_for(context)
