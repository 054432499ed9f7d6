"""nvidia-driver: the driver branch the GPU generation needs, from Ubuntu's archive.

The branch comes from `orchestrate.core.api.gpu_table` (Kepler/K80 -> R470, the last branch for
Kepler; Maxwell/Pascal/Volta -> proprietary modules; Turing and newer -> open modules). The
packages are Ubuntu's server-branch builds: Canonical's prebuilt, signed kernel modules when
the archive has them for the running kernel (no compiler on the host, and they load under
Secure Boot), DKMS otherwise. A freshly installed module that cannot load (nouveau or an older
nvidia module holds the GPU) asks for a reboot, which ends the stage.

NVSwitch shapes (8+ A100/H100/H200/B200: a2-highgpu-8g, a2-megagpu-16g, a3 8-GPU, p4d, p5)
also get ``nvidia-fabricmanager`` of the same branch, installed and started: without it
nvidia-smi works and CUDA does not.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrate.core.api import gpu_table
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext
from orchestrate.plugins.host.shell import step_script

NAME = "nvidia-driver"

_BODY = r"""
need_root
smi_works() { has nvidia-smi && timeout 60 nvidia-smi >/dev/null 2>&1; }

if smi_works; then
    log "NVIDIA driver already working: $(nvidia-smi --query-gpu=driver_version \
--format=csv,noheader | head -n 1)"
    exit 0
fi
log "$DECISION"
ID='' PRETTY_NAME=''
# shellcheck disable=SC1090
. "${ORCHESTRATE_OS_RELEASE:-/etc/os-release}"
if [ "$ID" != ubuntu ]; then
    die "the driver step installs Ubuntu's packaged NVIDIA driver; on ${PRETTY_NAME:-$ID} \
install R$BRANCH ($MODULES kernel modules) yourself, then run again"
fi
require_apt "the NVIDIA driver"
kver=$(uname -r)

if modinfo nvidia >/dev/null 2>&1 && [ ! -e /proc/driver/nvidia/version ]; then
    log "an NVIDIA kernel module is installed for $kver but not loaded; loading it"
    if modprobe nvidia 2>/dev/null && smi_works; then
        log "driver loaded"
        exit 0
    fi
fi

apt_update
flavour=''
for candidate in $FLAVOURS; do
    if apt_has "nvidia-headless-$candidate"; then
        flavour=$candidate
        break
    fi
done
if [ -z "$flavour" ]; then
    die "none of the driver packages for R$BRANCH ($FLAVOURS) is in this host's apt sources; \
enable Ubuntu's 'restricted' component"
fi

pkgs=("nvidia-utils-${flavour%-open}")
if apt_has "linux-modules-nvidia-$flavour-$kver"; then
    log "using Canonical's prebuilt signed modules for kernel $kver"
    pkgs+=("linux-modules-nvidia-$flavour-$kver" "nvidia-headless-no-dkms-$flavour")
    # The kernel-flavour metapackage keeps the modules in step with kernel updates.
    if apt_has "linux-modules-nvidia-$flavour-${kver##*-}"; then
        pkgs+=("linux-modules-nvidia-$flavour-${kver##*-}")
    fi
else
    log "no prebuilt modules for kernel $kver: DKMS will build them"
    pkgs+=("nvidia-headless-$flavour" "linux-headers-$kver")
    if [ "$SECURE_BOOT" = true ]; then
        warn "Secure Boot is on and DKMS modules are not signed by a key it trusts: the \
driver may not load; turn Secure Boot off for this VM or use a kernel with prebuilt modules"
    fi
fi
log "installing ${pkgs[*]}"
apt_get install --no-install-recommends "${pkgs[@]}"

if modprobe nvidia 2>/dev/null && smi_works; then
    log "driver $flavour loaded without a reboot"
    exit 0
fi
request_reboot "the NVIDIA $flavour kernel module loads at the next boot"
"""


FABRIC_NAME = "nvidia-fabricmanager"

_FABRIC_BODY = r"""
need_root
if systemctl is-active --quiet nvidia-fabricmanager 2>/dev/null; then
    log "nvidia-fabricmanager already running"
    exit 0
fi
has nvidia-smi || die "no nvidia-smi: the driver must be installed before the fabric manager"
version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
branch=${version%%.*}
require_apt "the NVIDIA fabric manager"
apt_update
pkg=''
for candidate in "nvidia-fabricmanager-$branch" "nvidia-fabricmanager-$branch-server"; do
    if apt_has "$candidate"; then
        pkg=$candidate
        break
    fi
done
if [ -z "$pkg" ]; then
    die "no nvidia-fabricmanager package for driver R$branch in this host's apt sources; \
this $GPU_COUNT-GPU NVSwitch shape needs it for CUDA"
fi
log "installing $pkg (driver $version): NVSwitch shapes need it for CUDA"
apt_get install --no-install-recommends "$pkg"
systemctl enable --now nvidia-fabricmanager
systemctl is-active --quiet nvidia-fabricmanager || die "nvidia-fabricmanager did not start; \
see journalctl -u nvidia-fabricmanager"
log "nvidia-fabricmanager running"
"""


def fabric_manager_step(context: StepContext) -> list[HostStep]:
    """The fabric-manager step for an NVSwitch shape; nothing for any other GPU count."""
    gpu = context.gpu
    if gpu is None or not gpu_table.needs_fabric_manager(gpu.name, gpu.count):
        return []

    def script(ctx: StepContext, facts: Facts) -> str:
        return step_script(_FABRIC_BODY, {"GPU_COUNT": gpu.count})

    return [
        HostStep(
            name=FABRIC_NAME,
            description="install and start nvidia-fabricmanager (NVSwitch: CUDA needs it)",
            needed=lambda facts: facts.has_nvidia_gpu,
            script=script,
            after_optional=("nvidia-driver",),
            stage=15,
        )
    ]


def decision_for(facts: Facts) -> gpu_table.DriverDecision | None:
    """The table's decision for the host's GPUs (None on a host without one)."""
    return gpu_table.decide(facts.gpus)


def steps_for(context: StepContext) -> list[HostStep]:
    """The driver step for a GPU launch; nothing for a CPU host."""
    if context.gpu is None:
        return []

    def needed(facts: Facts) -> bool:
        return facts.has_nvidia_gpu and not facts.driver.smi_ok

    def script(ctx: StepContext, facts: Facts) -> str:
        decision = decision_for(facts)
        row = decision.row if decision else gpu_table.driver_row(gpu_table.UNKNOWN)
        explain = decision.explain() if decision else "no NVIDIA GPU seen by the probe"
        return step_script(
            _BODY,
            {
                "DECISION": explain,
                "BRANCH": row.branch,
                "MODULES": row.modules,
                "FLAVOURS": " ".join(row.flavours),
                "SECURE_BOOT": "true" if facts.os.secure_boot else "false",
            },
        )

    def summarize(output: str, facts: Facts) -> str | None:
        decision = decision_for(facts)
        return decision.explain() if decision else None

    return [
        HostStep(
            name=NAME,
            description="install the NVIDIA driver branch the GPU generation needs "
            "(see `orchestrate gpus`)",
            needed=needed,
            script=script,
            # After docker's and the toolkit's apt installs (apt's lock would serialise them
            # anyway): docker comes first so the image pull runs during the long driver
            # install, and its reboot waits for the pull (the stage lets running steps end).
            after_optional=("gpu-check", "docker", "container-toolkit"),
            reboot_may_follow=True,
            stage=10,
            summarize=summarize,
        )
    ]


@hookimpl
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    return [*steps_for(context), *fabric_manager_step(context)]
