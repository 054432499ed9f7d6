"""tests/gpu/check.sh, the self-check for a real GPU machine, run here on fakes.

A GPU cannot exist on this machine, so `lspci` and `nvidia-smi` are small scripts first on
PATH that print the recorded outputs of tests/fixtures/gpus/, and CHECK_SKIP_SYSFS=1 skips
the two parts that read /sys (where no NVIDIA device can be faked). Everything else (the
probe, the driver table, the comparison with the fixtures) runs as on a GPU machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "gpus"
CHECK = ROOT / "tests" / "gpu" / "check.sh"


def check_with(tmp_path: Path, lspci: str, smi: str) -> subprocess.CompletedProcess[str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool, fixture in (("lspci", lspci), ("nvidia-smi", smi)):
        path = bindir / tool
        path.write_text(f"#!/bin/sh\ncat '{FIXTURES / fixture}'\n")
        path.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "CHECK_SKIP_SYSFS": "1",
        "PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(CHECK)], env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("name", "driver"),
    [
        ("k80", "R470 proprietary"),
        ("p100", "R580 proprietary"),
        ("t4", "R580 open"),
        ("l4", "R580 open"),
        ("h100", "R580 open"),
    ],
)
def test_recorded_gpu_passes_and_prints_the_table_choice(
    name: str, driver: str, tmp_path: Path
) -> None:
    proc = check_with(tmp_path, f"{name}.lspci", f"{name}.nvidia-smi")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"driver table: {driver}" in proc.stdout
    assert f"fixture: {name}" in proc.stdout and proc.stdout.rstrip().endswith("OK")
    assert "probe: " in proc.stdout


def test_a_mismatch_exits_non_zero(tmp_path: Path) -> None:
    """lspci says T4 while nvidia-smi names an L4: the names disagree with the fixture."""
    proc = check_with(tmp_path, "t4.lspci", "l4.nvidia-smi")
    assert proc.returncode == 1
    assert "MISMATCH: nvidia-smi names ['NVIDIA L4']" in proc.stdout
