"""Every host script passes shellcheck: the probe (POSIX sh), each step for every recorded
GPU and for a CPU host, and the stage wrapper that runs them.

shellcheck is required: a missing shellcheck fails here instead of skipping, so a CI without
it cannot pass unchecked scripts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from orchestrate.core.hoststeps import Facts, HostStep, StepContext, collect_steps
from orchestrate.core.probe import probe_script
from orchestrate.core.runner import stage_script
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
    scripts = [(s.name, s.script(context, facts)) for s in all_steps(context)]
    shellcheck({"stage-gpu": stage_script(scripts)}, "bash", tmp_path)


def test_shellcheck_catches_mistakes(tmp_path: Path) -> None:
    """The check is real: an unquoted expansion fails it."""
    with pytest.raises(AssertionError, match="SC2086"):
        shellcheck({"bad": "#!/bin/bash\nrm -rf $1\n"}, "bash", tmp_path)
