"""What tests/gpu/check.sh runs: orchestrate's GPU facts on this machine, compared with the
recorded fixtures of the same GPU.

The recorded outputs (tests/fixtures/gpus/NAME.lspci, NAME.nvidia-smi) are what the unit
tests pin the driver table on; this checks them against a real card: same device id and
chip, same GPU name in nvidia-smi, same driver branch and module flavour chosen. Any
disagreement is printed as a MISMATCH line and the exit status is 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestrate.core.api import gpu_table
from orchestrate.core.api.hoststeps import Facts, StepContext
from orchestrate.core.api.provider import GpuRequest
from orchestrate.core.host.probe import parse_facts, probe_script
from orchestrate.plugins.host import gpu_check

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpus"


def run(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not found"
    return proc.returncode, proc.stdout + proc.stderr


def fixture_for(device_id: str) -> str | None:
    """The recorded GPU whose lspci lists `device_id`."""
    for path in sorted(FIXTURES.glob("*.lspci")):
        if any(g.device_id == device_id for g in gpu_table.parse_lspci(path.read_text())):
            return path.stem
    return None


def main() -> int:
    mismatches: list[str] = []
    skip_sysfs = os.environ.get("CHECK_SKIP_SYSFS") == "1"

    _, lspci = run(["lspci", "-nn", "-d", "10de:"])
    smi_rc, smi = run(["nvidia-smi"])
    gpus = gpu_table.parse_lspci(lspci)
    report = gpu_table.parse_nvidia_smi(smi)
    print(
        f"lspci: {len(gpus)} NVIDIA GPU(s): "
        + ", ".join(f"{g.slot} {g.name} [10de:{g.device_id}]" for g in gpus)
    )
    print(f"nvidia-smi (exit {smi_rc}): {report.summary()}")
    decision = gpu_table.decide(gpus)
    if decision is None:
        print("MISMATCH: lspci lists no NVIDIA GPU")
        return 1
    row = decision.row
    print(
        f"driver table: R{row.branch} {row.modules} (packages {' '.join(row.flavours)}); "
        f"{decision.explain()}"
    )
    if report.driver_version:
        branch = gpu_table.branch_of(report.driver_version)
        print(f"installed driver: {report.driver_version} (R{branch})")

    context = StepContext(
        instance="gpu-check", gpu=GpuRequest("nvidia-gpu", len(gpus)), notebook_image="none"
    )
    # The probe runs as orchestrate runs it over SSH: the script is the `sh -c` command.
    rc, out = run(["sh", "-c", probe_script(context)])
    facts: Facts = parse_facts(out)
    print(
        f"probe: {facts.os.pretty or facts.os.id} kernel {facts.os.kernel}; "
        f"{len(facts.gpus)} GPU(s) in sysfs; driver loaded {facts.driver.loaded}, "
        f"open modules {facts.driver.open_modules}, nvidia-smi ok {facts.driver.smi_ok}; "
        f"docker {'installed' if facts.docker.installed else 'absent'}"
    )
    if skip_sysfs:
        print("probe GPU list and gpu-check skipped (CHECK_SKIP_SYSFS=1: no real GPU here)")
    else:
        ids = sorted(g.device_id for g in facts.gpus)
        if ids != sorted(g.device_id for g in gpus):
            mismatches.append(f"probe saw device ids {ids} in sysfs, lspci lists others")
        (step,) = gpu_check.steps_for(context)
        rc, out = run(["bash", "-c", step.script(context, facts)])
        print(f"gpu-check step: exit {rc}: {out.strip().splitlines()[-1] if out.strip() else ''}")
        if rc != 0:
            mismatches.append("the gpu-check step failed")

    name = fixture_for(gpus[0].device_id)
    if name is None:
        mismatches.append(
            f"no recorded fixture for device 10de:{gpus[0].device_id} ({gpus[0].name}): "
            f"record lspci -nn and nvidia-smi into {FIXTURES}/NAME.lspci and NAME.nvidia-smi"
        )
    else:
        recorded_gpus = gpu_table.parse_lspci((FIXTURES / f"{name}.lspci").read_text())
        recorded = gpu_table.decide(recorded_gpus)
        recorded_smi = gpu_table.parse_nvidia_smi((FIXTURES / f"{name}.nvidia-smi").read_text())
        print(f"fixture: {name} ({recorded_smi.summary()})")
        by_id = {g.device_id: g for g in recorded_gpus}
        for gpu in gpus:
            twin = by_id.get(gpu.device_id)
            if twin is not None and twin.generation != gpu.generation:
                mismatches.append(
                    f"{gpu.slot}: generation {gpu.generation}, fixture {twin.generation}"
                )
        if recorded is not None and (recorded.row.branch, recorded.row.modules) != (
            row.branch,
            row.modules,
        ):
            mismatches.append(
                f"driver table picks R{row.branch} {row.modules} here, "
                f"R{recorded.row.branch} {recorded.row.modules} for the fixture"
            )
        if set(report.gpus) != set(recorded_smi.gpus):
            mismatches.append(
                f"nvidia-smi names {sorted(set(report.gpus))}, "
                f"the fixture {sorted(set(recorded_smi.gpus))}"
            )
    if smi_rc != 0 or not report.gpus:
        mismatches.append("nvidia-smi did not list the GPUs (is the driver loaded?)")
    for line in mismatches:
        print(f"MISMATCH: {line}")
    print("OK" if not mismatches else f"{len(mismatches)} mismatch(es)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
