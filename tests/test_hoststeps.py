"""Host steps without a host: ordering, planning from facts, the probe's JSON, --dry-run."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pluggy
import pytest
from orchestrate.core.api.errors import PluginError
from orchestrate.core.api.gpu_table import parse_lspci
from orchestrate.core.api.hoststeps import (
    ContainerFacts,
    DockerFacts,
    DriverFacts,
    Facts,
    HostStep,
    ImageFacts,
    StepContext,
    collect_steps,
    order_steps,
    plan,
)
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.host.probe import facts_from_dict, parse_facts, probe_script
from orchestrate.core.host.runner import dry_run_text
from orchestrate.core.wiring.registry import HOST_PLUGINS

FIXTURES = Path(__file__).parent / "fixtures" / "gpus"


def _step(name: str, *, after: tuple[str, ...] = (), **kw: object) -> HostStep:
    return HostStep(
        name=name,
        description=name,
        needed=lambda facts: True,
        script=lambda ctx, facts: "true\n",
        after=after,
        **kw,  # type: ignore[arg-type]
    )


def manager() -> pluggy.PluginManager:
    """The host plugins through the same manager the CLI builds (lazy built-ins, entry
    points, the installed pluggy), so what is planned and shellchecked here is what runs."""
    from orchestrate.core.wiring.registry import build_manager

    return build_manager(HOST_PLUGINS)


def gpu_context(gpu: str = "nvidia-tesla-k80", image: str = "jupyter/base-notebook") -> StepContext:
    return StepContext(
        instance="box", gpu=GpuRequest(gpu), notebook_image=image, token="s3cret-token-123"
    )


def fresh_gpu_facts(fixture: str) -> Facts:
    gpus = tuple(parse_lspci((FIXTURES / f"{fixture}.lspci").read_text()))
    return Facts(gpus=gpus)


def ready_facts(fixture: str = "t4", context: StepContext | None = None) -> Facts:
    """A host with everything set up, the notebook container running as `context` wants."""
    from orchestrate.plugins.host.notebook import config_hash

    context = context or gpu_context("nvidia-tesla-t4")
    return Facts(
        gpus=fresh_gpu_facts(fixture).gpus,
        driver=DriverFacts(loaded="535.129.03", smi_ok=True, installed="535.129.03"),
        docker=DockerFacts(
            installed=True, running=True, runtimes=("io.containerd.runc.v2", "nvidia", "runc"),
            cgroup_driver="cgroupfs",
        ),
        toolkit_version="1.17.8",
        image=ImageFacts(name="jupyter/base-notebook", present=True),
        container=ContainerFacts(name="orchestrate-notebook", state="running"),
        extra={"notebook": config_hash(context)},
    )  # fmt: skip


def test_order_is_topological_and_stable() -> None:
    steps = [
        _step("verify", after=("toolkit",), stage=40),
        _step("toolkit", after=("docker",)),
        _step("docker", stage=20),
        _step("driver", stage=10),
        _step("image", after=("docker",), stage=35),
    ]
    names = [s.name for s in order_steps(steps)]
    assert names == ["driver", "docker", "image", "toolkit", "verify"]


def test_order_errors_name_the_steps() -> None:
    with pytest.raises(PluginError, match="'ghost'"):
        order_steps([_step("a", after=("ghost",))])
    with pytest.raises(PluginError, match="cycle: a, b"):
        order_steps([_step("a", after=("b",)), _step("b", after=("a",))])
    with pytest.raises(PluginError, match="two plugins"):
        order_steps([_step("a"), _step("a")])
    # an optional dependency that nobody provides is fine
    assert [s.name for s in order_steps([_step("a", after_optional=("ghost",))])] == ["a"]


def test_plugins_plan_a_fresh_k80_host() -> None:
    steps = collect_steps(manager().hook, gpu_context())
    names = [s.name for s in steps]
    assert names == [
        "gpu-check", "docker", "container-toolkit", "nvidia-driver", "image", "verify", "notebook"
    ]  # fmt: skip
    todo = [s.name for s in plan(steps, fresh_gpu_facts("k80"))]
    assert todo == ["docker", "container-toolkit", "nvidia-driver", "image", "verify", "notebook"]
    driver = next(s for s in steps if s.name == "nvidia-driver")
    script = driver.script(gpu_context(), fresh_gpu_facts("k80"))
    assert "BRANCH=470" in script and "FLAVOURS='470-server 470'" in script


def test_cpu_host_gets_no_gpu_steps() -> None:
    context = StepContext(instance="cpu", gpu=None, notebook_image="jupyter/base-notebook")
    steps = collect_steps(manager().hook, context)
    assert [s.name for s in steps] == ["docker", "image", "notebook"]


def test_set_up_host_needs_nothing_and_verify_follows_changes() -> None:
    steps = collect_steps(manager().hook, gpu_context("nvidia-tesla-t4"))
    assert plan(steps, ready_facts()) == []
    # a step that ran earlier in this setup (before a reboot) brings verify back
    assert [s.name for s in plan(steps, ready_facts(), changed=["nvidia-driver"])] == ["verify"]


def test_no_gpu_on_a_gpu_launch_plans_gpu_check_first() -> None:
    steps = collect_steps(manager().hook, gpu_context())
    todo = plan(steps, Facts())
    assert todo[0].name == "gpu-check"


def test_image_cuda_warning_for_kepler() -> None:
    context = gpu_context(image="nvidia/cuda:12.4.1-runtime-ubuntu22.04")
    steps = collect_steps(manager().hook, context)
    image = next(s for s in steps if s.name == "image")
    assert image.warnings is not None
    (warning,) = image.warnings(fresh_gpu_facts("k80"))
    assert "CUDA 12.4" in warning and "R470" in warning and "11.4" in warning
    assert image.warnings(fresh_gpu_facts("l4")) == []


def test_dry_run_shows_probe_and_scripts_without_the_token() -> None:
    context = gpu_context()
    text = dry_run_text(manager().hook, context)
    assert "probe: one SSH command" in text
    assert "nvidia-driver [would run, may reboot] (waits for docker, container-toolkit)" in text
    assert "image [would run] (waits for docker, container-toolkit)" in text
    assert "BRANCH=470" in text  # the K80 the profile asks for decides the branch
    assert "gpu-check [not needed]" in text
    assert "s3cret-token-123" not in text
    # with facts of a set-up host nothing would run
    text = dry_run_text(manager().hook, gpu_context("nvidia-tesla-t4"), ready_facts())
    assert "would run" not in text


NASTY = 'tab\there "quoted" back\\slash $dollar `tick` \x01\x1f ünïcødé \' end'


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_probe_json_survives_any_text(shell: str) -> None:
    """The probe quotes JSON in sh alone; run it here and feed it hostile text."""
    context = StepContext(instance="x", gpu=None, notebook_image='img:it\'s "odd"')
    snippet = f"printf '%s\\n' {shlex.quote(NASTY)}; printf 'line two\\n'"
    extra = HostStep(
        name="nasty", description="", needed=lambda f: False, script=lambda c, f: "", probe=snippet
    )
    script = probe_script(context, [extra])
    out = subprocess.run([shell, "-c", script], capture_output=True, text=True, timeout=60)
    facts = parse_facts(out.stdout)
    assert facts.image.name == 'img:it\'s "odd"'
    value = facts.extra["nasty"]
    assert value.startswith('tab here "quoted" back\\slash $dollar `tick`  ünïcødé')
    assert value.endswith("' end\nline two")
    assert facts.os.kernel and facts.user.uid >= 0


#: Shell-special but JSON-plain: the probe copies it without the escaping pipeline.
PLAIN = "it's (x) [y] !#&*;<>?|{}$HOME ~ % ünïcødé"


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_probe_json_copies_plain_text_as_is(shell: str) -> None:
    context = StepContext(instance="x", gpu=None, notebook_image=PLAIN)
    extra = HostStep(
        name="plain", description="", needed=lambda f: False, script=lambda c, f: "",
        probe=f"printf '%s' {shlex.quote(PLAIN)}",
    )  # fmt: skip
    out = subprocess.run(
        [shell, "-c", probe_script(context, [extra])], capture_output=True, text=True, timeout=60
    )
    facts = parse_facts(out.stdout)
    assert facts.image.name == PLAIN and facts.extra["plain"] == PLAIN


def test_facts_from_partial_json() -> None:
    facts = facts_from_dict({"schema": 1, "gpus": [{"slot": "0000:00:04.0", "device_id": "1EB8"}],
                             "lspci": (FIXTURES / "t4.lspci").read_text()})  # fmt: skip
    assert facts.gpus[0].device_id == "1eb8"
    assert facts.gpus[0].name == "TU104GL [Tesla T4]"
    assert facts.gpus[0].generation == "turing"
    assert not facts.docker.running and facts.driver.loaded is None


def test_hook_host_steps_every_builtin_contributes_through_the_real_manager() -> None:
    """The manager users get (lazy built-ins, whatever pluggy is installed) plans a step
    from every host plugin, autostop included."""
    from orchestrate.core.wiring.registry import build_manager

    context = StepContext(
        instance="box", gpu=GpuRequest("nvidia-tesla-t4"), notebook_image="jupyter/base-notebook",
        token="s3cret-token-123", autostop="60m",
    )  # fmt: skip
    names = [s.name for s in collect_steps(build_manager().hook, context)]
    assert set(names) == {
        "gpu-check", "nvidia-driver", "docker", "container-toolkit", "image", "verify",
        "notebook", "autostop",
    }  # fmt: skip


def test_autostop_is_armed_first_and_required_while_on() -> None:
    """The agent goes on before the driver, docker and the image pull; a plan without it
    is refused while the profile has autostop on."""
    from orchestrate.core.api.errors import PluginError
    from orchestrate.core.api.hoststeps import require_autostop
    from orchestrate.core.wiring.registry import build_manager

    context = StepContext(
        instance="box", gpu=GpuRequest("nvidia-tesla-t4"), notebook_image="jupyter/base-notebook",
        token="s3cret-token-123", autostop="60m",
    )  # fmt: skip
    steps = collect_steps(build_manager().hook, context)
    assert steps[0].name == "autostop"
    require_autostop(steps, context)
    without = [s for s in steps if s.name != "autostop"]
    with pytest.raises(PluginError, match=r"autostop is on \(60m\) but no plugin plans"):
        require_autostop(without, context)
    require_autostop(without, dataclasses.replace(context, autostop="off"))
