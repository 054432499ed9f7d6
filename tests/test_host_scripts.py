"""Every host script passes shellcheck: the probe (POSIX sh), each step for every recorded
GPU and for a CPU host, and the stage wrapper that runs them.

shellcheck is required: a missing shellcheck fails here instead of skipping, so a CI without
it cannot pass unchecked scripts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from orchestrate.core.api.hoststeps import Facts, HostStep, StepContext, collect_steps
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.host.probe import parse_facts, probe_script
from orchestrate.core.host.runner import stage_script
from orchestrate.core.host.stagescript import step_graph
from orchestrate.plugins.host.shell import PRELUDE

from tests.test_hoststeps import fresh_gpu_facts, gpu_context, manager, ready_facts

GPUS = ["k80", "p100", "v100", "t4", "a100", "l4", "h100"]


def shellcheck(scripts: dict[str, str], shell: str, tmp_path: Path) -> None:
    """Check every script (name -> text) in one shellcheck run; fail with its findings."""
    binary = shutil.which("shellcheck")
    if binary is None:
        pytest.fail("shellcheck is not installed (Debian: apt-get install shellcheck)")
    paths = []
    unique = {text: name for name, text in scripts.items()}  # identical scripts: check once
    for script, name in unique.items():
        path = tmp_path / f"{name}.{shell}"
        path.write_text(script)
        paths.append(str(path))
    proc = subprocess.run(
        [binary, "--shell", shell, "--severity", "style", "--format", "gcc", *paths],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"shellcheck:\n{proc.stdout}{proc.stderr}"


def all_steps(context: StepContext) -> list[HostStep]:
    return collect_steps(manager().hook, context)


def test_prelude(tmp_path: Path) -> None:
    shellcheck({"prelude": PRELUDE}, "bash", tmp_path)


def test_probe_script(tmp_path: Path) -> None:
    context = gpu_context()
    scripts = {
        "probe": probe_script(context, all_steps(context)),
        "probe-bare": probe_script(context),
        "probe-jupyter": probe_script(context, jupyter=True),
    }
    shellcheck(scripts, "sh", tmp_path)


@pytest.mark.parametrize("gpu", GPUS)
def test_gpu_step_scripts(gpu: str, tmp_path: Path) -> None:
    context = gpu_context(image="nvidia/cuda:12.4.1-runtime-ubuntu22.04")
    steps = all_steps(context)
    scripts = {
        f"{gpu}-{i}-{step.name}": step.script(context, facts)
        for i, facts in enumerate((fresh_gpu_facts(gpu), ready_facts(gpu), Facts()))
        for step in steps
    }
    shellcheck(scripts, "bash", tmp_path)


def test_cpu_step_scripts_and_stage(tmp_path: Path) -> None:
    context = StepContext(instance="cpu", gpu=None, notebook_image="jupyter/base-notebook")
    steps = all_steps(context)
    scripts = [(s.name, s.script(context, Facts())) for s in steps]
    shellcheck({**dict(scripts), "stage": stage_script(scripts)}, "bash", tmp_path)


def test_stage_for_a_gpu_host(tmp_path: Path) -> None:
    context = gpu_context()
    facts = fresh_gpu_facts("k80")
    steps = all_steps(context)
    scripts = [(s.name, s.script(context, facts)) for s in steps]
    shellcheck({"stage-gpu": stage_script(scripts, step_graph(steps))}, "bash", tmp_path)


@pytest.mark.skipif(
    shutil.which("docker") is None or os.geteuid() != 0,
    reason="needs the docker client, and root so the probe runs it without sudo",
)
def test_probe_with_docker_installed_but_its_daemon_down(tmp_path: Path) -> None:
    """The probe asks the daemon three things at once: when it does not answer, docker is
    installed but not running, with the daemon's own error, and nothing else is claimed."""
    context = StepContext(instance="p", gpu=None, notebook_image="jupyter/base-notebook")
    env = {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        ["sh", "-c", probe_script(context)], env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    facts = parse_facts(done.stdout)
    assert facts.docker.installed and not facts.docker.running
    assert (facts.docker.client_version or "").startswith("Docker version")
    assert "Cannot connect to the Docker daemon" in facts.docker.error
    assert not facts.image.present and facts.container.state is None
    deadline = time.monotonic() + 10  # removed in the background, after the facts
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == [], "the probe leaves no temporary folder behind"


def test_shellcheck_catches_mistakes(tmp_path: Path) -> None:
    """The check is real: an unquoted expansion fails it."""
    with pytest.raises(AssertionError, match="SC2086"):
        shellcheck({"bad": "#!/bin/bash\nrm -rf $1\n"}, "bash", tmp_path)


# -- the GPU scripts' logic, run here against fake commands ----------------------------
# No GPU here, so `docker run --gpus`, apt's driver packages and nvidia-ctk are stood in for
# by small fakes first on PATH; the scripts themselves run unchanged in bash.

FIXTURES = Path(__file__).parent / "fixtures" / "gpus"


def fake_bin(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    """A folder of fake commands (name -> bash body) and an environment that finds them first.

    The fakes log their arguments to calls.log; `systemctl`, `service` and `reboot` are always
    faked so nothing here can touch the real services.
    """
    bindir = tmp_path / "bin"
    bindir.mkdir()
    defaults = {name: "exit 0" for name in ("systemctl", "service", "reboot", "fuser")}
    defaults["fuser"] = "exit 1"  # nothing holds the apt lock
    for name, body in {**defaults, **tools}.items():
        path = bindir / name
        path.write_text(f'#!/bin/bash\necho "{name} $*" >>"{tmp_path}/calls.log"\n{body}\n')
        path.chmod(0o755)
    return {
        "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "ORCHESTRATE_REBOOT_FILE": str(tmp_path / "reboot-required"),
        "HOME": str(tmp_path),
    }


def run_script(
    script: str, env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "step.sh"
    path.write_text(script)
    return subprocess.run(
        ["bash", str(path)], env=env, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def step_named(context: StepContext, name: str) -> HostStep:
    return next(s for s in all_steps(context) if s.name == name)


def test_verify_retries_until_the_driver_is_ready(tmp_path: Path) -> None:
    smi = FIXTURES / "t4.nvidia-smi"
    env = fake_bin(tmp_path, {"docker": f"""
case $1 in
    info) exit 0 ;;
    run)
        n=$(( $(cat "{tmp_path}/runs" 2>/dev/null || echo 0) + 1 )); echo $n >"{tmp_path}/runs"
        if [ $n -lt 3 ]; then echo "Failed to initialize NVML: Unknown Error"; exit 1; fi
        cat "{smi}"; echo "CUDA context: ok on 1 GPU(s)" ;;
esac"""})  # fmt: skip
    context = StepContext(
        instance="v", gpu=GpuRequest("nvidia-tesla-t4"), notebook_image="img",
        extra={"verify_retry_s": 0, "verify_deadline_s": 60},
    )  # fmt: skip
    step = step_named(context, "verify")
    proc = run_script(step.script(context, Facts()), env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "runs").read_text().strip() == "3"
    assert "GPU not ready in a container yet (try 1)" in proc.stdout
    calls = (tmp_path / "calls.log").read_text()
    assert "--gpus all -e NVIDIA_DISABLE_REQUIRE=1" in calls
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility img sh -c" in calls, "no CUDA image tag"
    assert step.summarize is not None
    assert step.summarize(proc.stdout, Facts()) == (
        "GPU in a container: 1x Tesla T4, driver 535.129.03, CUDA 12.2; CUDA context created"
    )


def test_verify_needs_a_cuda_context_not_only_nvidia_smi(tmp_path: Path) -> None:
    """nvidia-smi answers on an NVSwitch host without fabric manager, CUDA does not."""
    smi = FIXTURES / "t4.nvidia-smi"
    failed = "CUDA context: cuInit failed with CUDA error 802 (NVSwitch host: is nvidia-fab"
    proc = verify_at_deadline(tmp_path, f"""
[ "$1" = info ] && exit 0
cat "{smi}"; echo "{failed}"; exit 1""")  # fmt: skip
    assert proc.returncode != 0
    assert "error 802" in proc.stderr and "no working GPU inside a container" in proc.stderr


def test_the_cuda_check_runs_as_python(tmp_path: Path) -> None:
    """The in-container check is valid Python that reaches libcuda; here there is none
    (no GPU on this machine), so it must fail at loading it, not at a syntax error."""
    from orchestrate.plugins.host.verify import CUDA_CHECK

    proc = subprocess.run(
        [sys.executable, "-c", CUDA_CHECK], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "libcuda.so.1" in proc.stderr


def verify_at_deadline(tmp_path: Path, docker: str) -> subprocess.CompletedProcess[str]:
    """The verify step with a one-second deadline, `docker` faked by the given bash body."""
    env = fake_bin(tmp_path, {"docker": docker})
    context = StepContext(
        instance="v", gpu=GpuRequest("nvidia-tesla-t4"), notebook_image="img",
        extra={"verify_retry_s": 1, "verify_deadline_s": 1},
    )  # fmt: skip
    return run_script(step_named(context, "verify").script(context, Facts()), env, tmp_path)


def test_verify_gives_up_at_its_deadline(tmp_path: Path) -> None:
    proc = verify_at_deadline(tmp_path, '[ "$1" = info ] && exit 0; echo "no GPU"; exit 125')
    assert proc.returncode != 0
    assert "no working GPU inside a container after 1 s" in proc.stderr


def ubuntu_release(tmp_path: Path) -> str:
    path = tmp_path / "os-release"
    path.write_text('ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n')
    return str(path)


def test_driver_for_a_k80_installs_r470_and_asks_for_a_reboot(tmp_path: Path) -> None:
    kver = os.uname().release
    env = fake_bin(tmp_path, {
        "nvidia-smi": "exit 9",  # no driver yet
        "modinfo": "exit 1",
        "modprobe": "exit 1",  # nouveau holds the card until the reboot
        "apt-get": "exit 0",
        "apt-cache": f"""
case $2 in
    nvidia-headless-470-server|linux-modules-nvidia-470-server-{kver}) echo "  Candidate: 1.0" ;;
    *) echo "  Candidate: (none)" ;;
esac""",
    })  # fmt: skip
    env["ORCHESTRATE_OS_RELEASE"] = ubuntu_release(tmp_path)
    context = gpu_context()
    facts = fresh_gpu_facts("k80")
    proc = run_script(step_named(context, "nvidia-driver").script(context, facts), env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Kepler GPU -> R470 with proprietary kernel modules" in proc.stdout
    calls = (tmp_path / "calls.log").read_text()
    assert "apt-get -q -y -o DPkg::Lock::Timeout=600" in calls
    install = next(line for line in calls.splitlines() if " install " in line)
    assert f"linux-modules-nvidia-470-server-{kver}" in install
    assert "nvidia-headless-no-dkms-470-server" in install and "nvidia-utils-470-server" in install
    assert "open" not in install
    assert (tmp_path / "reboot-required").exists(), "the module loads only after a reboot"


def test_driver_for_an_l4_picks_open_modules_with_dkms_when_no_prebuilt(tmp_path: Path) -> None:
    env = fake_bin(tmp_path, {
        "nvidia-smi": '[ -e "$HOME/loaded" ] || exit 9; echo "535.129.03"',
        "modinfo": "exit 1",
        "modprobe": 'touch "$HOME/loaded"',  # loads at once: no reboot needed
        "apt-get": "exit 0",
        "apt-cache": """
case $2 in
    nvidia-headless-535-server-open) echo "  Candidate: 1.0" ;;
    *) echo "  Candidate: (none)" ;;
esac""",
    })  # fmt: skip
    env["ORCHESTRATE_OS_RELEASE"] = ubuntu_release(tmp_path)
    context = gpu_context("nvidia-l4")
    facts = fresh_gpu_facts("l4")
    proc = run_script(step_named(context, "nvidia-driver").script(context, facts), env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    install = next(
        line for line in (tmp_path / "calls.log").read_text().splitlines() if " install " in line
    )
    # 580 and 570 are not in this archive: the first flavour it has wins
    assert "nvidia-headless-535-server-open" in install and "linux-headers-" in install
    assert "driver 535-server-open loaded without a reboot" in proc.stdout
    assert not (tmp_path / "reboot-required").exists()


def test_driver_step_refuses_clearly_off_ubuntu(tmp_path: Path) -> None:
    env = fake_bin(tmp_path, {"nvidia-smi": "exit 9"})
    release = tmp_path / "os-release"
    release.write_text('ID=debian\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    env["ORCHESTRATE_OS_RELEASE"] = str(release)
    context = gpu_context()
    proc = run_script(
        step_named(context, "nvidia-driver").script(context, fresh_gpu_facts("k80")), env, tmp_path
    )
    assert proc.returncode != 0
    assert "on Debian GNU/Linux 12 (bookworm) install R470 (proprietary kernel modules)" in (
        proc.stderr
    )


def test_container_toolkit_configures_runtime_and_cgroupfs(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text('{"exec-opts": ["native.cgroupdriver=systemd"], "log-driver": "local"}')
    env = fake_bin(tmp_path, {
        "nvidia-ctk": f"""
case $1 in
    --version) echo "NVIDIA Container Toolkit CLI version 1.17.8" ;;
    runtime) python3 -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p));
c.setdefault("runtimes", {{}})["nvidia"]={{"path": "nvidia-container-runtime", "args": []}};
json.dump(c, open(p, "w"))' "{daemon_json}" ;;
esac""",
        "docker": f"""
[ "$1" = info ] || exit 0
[ "$2" = --format ] || exit 0
grep -q cgroupfs "{daemon_json}" && cg=cgroupfs || cg=systemd
grep -q nvidia "{daemon_json}" && echo "$cg nvidia runc " || echo "$cg runc " """,
    })  # fmt: skip
    env["DOCKER_DAEMON_JSON"] = str(daemon_json)
    context = gpu_context()
    step = step_named(context, "container-toolkit")
    proc = run_script(step.script(context, fresh_gpu_facts("t4")), env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = json.loads(daemon_json.read_text())
    assert config["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert config["log-driver"] == "local" and "nvidia" in config["runtimes"]
    calls = (tmp_path / "calls.log").read_text()
    assert "nvidia-ctk runtime configure --runtime=docker" in calls
    assert "service docker restart" in calls, "docker restarted to load the new config"
    # run again: nothing changes, docker is not restarted a second time
    (tmp_path / "calls.log").unlink()
    proc = run_script(step.script(context, fresh_gpu_facts("t4")), env, tmp_path)
    assert proc.returncode == 0 and "restart" not in (tmp_path / "calls.log").read_text()


@pytest.mark.parametrize(
    ("gpu", "count", "wanted"),
    [
        ("nvidia-tesla-a100", 8, True),  # a2-highgpu-8g, p4d
        ("nvidia-tesla-a100", 16, True),  # a2-megagpu-16g
        ("nvidia-h100-80gb", 8, True),  # a3-highgpu-8g, p5
        ("nvidia-tesla-a100", 4, False),
        ("nvidia-l4", 8, False),  # g2-standard-96: PCIe, no NVSwitch
        ("nvidia-tesla-t4", 4, False),
    ],
)
def test_fabric_manager_only_for_nvswitch_shapes(gpu: str, count: int, wanted: bool) -> None:
    context = StepContext(instance="x", gpu=GpuRequest(gpu, count), notebook_image="img")
    names = [s.name for s in all_steps(context)]
    assert ("nvidia-fabricmanager" in names) == wanted
    if wanted:
        assert names.index("nvidia-driver") < names.index("nvidia-fabricmanager")
        assert names.index("nvidia-fabricmanager") < names.index("verify")


def test_fabric_manager_matches_the_driver_branch_and_starts(tmp_path: Path) -> None:
    env = fake_bin(tmp_path, {
        "nvidia-smi": 'echo "550.127.05"',
        "apt-get": "exit 0",
        "apt-cache": """
case $2 in
    nvidia-fabricmanager-550) echo "  Candidate: 550.127.05-0ubuntu1" ;;
    *) echo "  Candidate: (none)" ;;
esac""",
        "systemctl": '[ "$1 $2" = "is-active --quiet" ] && [ ! -e "$HOME/started" ] && exit 3\n'
        'case $* in *"enable --now"*) touch "$HOME/started" ;; esac; exit 0',
    })  # fmt: skip
    context = StepContext(instance="x", gpu=GpuRequest("nvidia-h100-80gb", 8), notebook_image="img")
    script = step_named(context, "nvidia-fabricmanager").script(context, Facts())
    shellcheck({"fabric": script}, "bash", tmp_path)
    proc = run_script(script, env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = (tmp_path / "calls.log").read_text()
    install = next(line for line in calls.splitlines() if " install " in line)
    assert install.endswith("nvidia-fabricmanager-550")
    assert "systemctl enable --now nvidia-fabricmanager" in calls
    assert "nvidia-fabricmanager running" in proc.stdout
