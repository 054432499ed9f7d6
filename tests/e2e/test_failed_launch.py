"""A launch that fails or is interrupted after the instance exists never leaves a silent
bill: its last line says the instance is still running, at about what price, whether
autostop will stop it, and the command that deletes it.

On the bed the profile has autostop off (the bed's "VM" is this machine, which the agent
must not power off), so the line says it bills until stopped; the agent being armed first
on a failed setup is shown on the host by tests/test_autostop_step.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import Bed, gcp_bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


@pytest.fixture
def bed(
    orch_home: Path, gce_api, gce_credentials: Path, ssh_host, docker_engine, jupyter_image
) -> Iterator[Bed]:
    with gcp_bed(orch_home, gce_api, gce_credentials, ssh_host, jupyter_image) as made:
        yield made


def still_running_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("orchestrate:")]
    assert len(lines) == 1, err
    return lines[0]


def test_failed_setup_says_the_instance_is_still_running(bed: Bed) -> None:
    # The notebook step fails for real: the host port Jupyter is published on is taken.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", bed.remote_port))
        taken.listen()
        result = bed.cli("launch", "nb", "--profile", "e2e", "--no-browser", check=False)
    assert result.returncode != 0
    line = still_running_line(result.stderr)
    assert "host step 'notebook' failed" in line, line
    assert "nb is still running at about $" in line, line
    assert "autostop is off, so it bills until you stop it" in line, line
    assert line.endswith("`orchestrate down nb` deletes it"), line
    rows = json.loads(bed.cli("status", "--offline", "--json").stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("nb", "running")]


def test_ctrl_c_during_setup_exits_130_and_says_the_instance_is_still_running(
    bed: Bed,
) -> None:
    env = {**os.environ, "ORCHESTRATE_CRASH_AT": "in-host-step:interrupt"}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrate.core.app.cli", "launch", "nb", "--profile", "e2e",
         "--no-browser"],
        cwd=bed.work, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 130, result.stderr
    line = still_running_line(result.stderr)
    assert line.startswith("orchestrate: interrupted (nb is still running at about $"), line
    assert "`orchestrate down nb` deletes it" in line
    rows = json.loads(bed.cli("status", "--offline", "--json").stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("nb", "running")]
