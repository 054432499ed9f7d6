"""Cluster autostop: the head counts Ray's work, each worker follows the head.

The decisions run for real with windows of seconds: the pure `decide` with observations as
the agent makes them, and a worker's agent process (``--loop``) watching a real TCP
listener that stands for the head's GCS port, with the power-off command replaced by a
marker file (powering the test machine off is the one thing a test cannot do).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from orchestrate.plugins.host.autostop import agent
from orchestrate.plugins.host.autostop.agent import Config, KernelView, Observation, decide

from tests.test_autostop_agent import AGENT, wait_for

HEAD = Config(idle_seconds=5.0, interval=1.0, cluster_role="head")
WORKER = Config(idle_seconds=5.0, interval=1.0, cluster_role="worker", head_address="127.0.0.1")

#: What Ray 2.60's ``ray status`` prints on a head with three nodes and work running.
RAY_STATUS_BUSY = """======== Autoscaler status: 2026-12-03 13:50:01.123456 ========
Node status
---------------------------------------------------------------
Active:
 1 node_6f1c2a0e5c5b4f6d8e7a9b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a
 2 node_0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d
Pending:
 (no pending nodes)
Recent failures:
 (no failures)

Resources
---------------------------------------------------------------
Total Usage:
 0.0/8.0 CPU
 1.0/3.0 GPU
 0B/22.35GiB memory
"""


def _obs(now: float, **kw: Any) -> Observation:
    return Observation(
        now=now, boot_id="boot-1", connections=[], jupyter=KernelView(reachable=True),
        logins=[], **kw,
    )  # fmt: skip


def test_ray_status_is_read_as_nodes_and_resources_in_use() -> None:
    view = agent.parse_ray_status(RAY_STATUS_BUSY)
    assert view == {"nodes": 3, "CPU": [0.0, 8.0], "GPU": [1.0, 3.0]}
    assert agent.ray_in_use(view) == ["ray: 1 GPU in use"]
    idle = RAY_STATUS_BUSY.replace("1.0/3.0 GPU", "0.0/3.0 GPU")
    assert agent.ray_in_use(agent.parse_ray_status(idle) or {}) == []
    assert agent.parse_ray_status("ConnectionError: Could not find any running Ray") is None


def test_head_with_ray_work_stays_up_and_powers_off_a_window_after_it_ends() -> None:
    state, action, _ = decide({}, _obs(1000.0, ray=["ray: 1 GPU in use"]), HEAD)
    assert action == agent.ACTIVE and "ray: 1 GPU in use" in state["active"]
    state, action, _ = decide(state, _obs(1004.0, ray=["ray: 1 GPU in use"]), HEAD)
    assert action == agent.ACTIVE
    state, action, _ = decide(state, _obs(1008.0), HEAD)
    assert action == agent.IDLE
    state, action, _ = decide(state, _obs(1009.0), HEAD)
    assert action == agent.POWEROFF


def test_worker_follows_the_head_and_outlives_it_by_one_window_at_most() -> None:
    state, action, _ = decide({}, _obs(1000.0, head_answers=True), WORKER)
    assert action == agent.ACTIVE and state["active"] == ["the cluster's head answers"]
    state, action, _ = decide(state, _obs(1003.0, head_answers=False), WORKER)
    assert action == agent.IDLE
    state, action, _ = decide(state, _obs(1004.9, head_answers=False), WORKER)
    assert action == agent.IDLE, "a window from the last check that heard the head"
    state, action, _ = decide(state, _obs(1005.0, head_answers=False), WORKER)
    assert action == agent.POWEROFF
    obs = _obs(1008.0, head_answers=False)
    assert "the cluster's head does not answer" in obs.idle_summary(8888, 5.0)


def test_a_config_with_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="cluster_role"):
        Config.from_dict({"idle_seconds": 5, "cluster_role": "boss"})


def test_a_worker_agent_powers_off_a_window_after_the_head_goes_quiet(tmp_path: Path) -> None:
    """The worker's agent for real (``--loop``, checks every 0.25 s, a 2 s window): up while
    the "head" accepts connections, off 2 s after it stops listening."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = int(listener.getsockname()[1])
    marker = tmp_path / "POWERED-OFF"
    config = tmp_path / "autostop.json"
    config.write_text(
        json.dumps({
            "idle_seconds": 2.0, "port": 1, "jupyter_url": "http://127.0.0.1:1", "token": "",
            "interval": 0.25, "poweroff_command": f"touch {marker}",
            "state_dir": str(tmp_path / "state"), "log_file": str(tmp_path / "log"),
            "console": False, "cluster_role": "worker", "head_address": "127.0.0.1",
            "ray_port": port,
        })
    )  # fmt: skip
    python = shutil.which("python3") or "/usr/bin/python3"
    process = subprocess.Popen(
        [python, str(AGENT), "--config", str(config), "--loop"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        began = time.monotonic()
        while time.monotonic() - began < 4.0:  # twice the window, the head answering
            try:
                conn, _ = listener.accept() if _ready(listener) else (None, None)
            except OSError:
                conn = None
            if conn is not None:
                conn.close()
            assert not marker.exists(), "powered off while the head answered"
        listener.close()
        quiet = time.monotonic()
        wait_for(marker.exists, timeout=30)
        # a window after the last check that heard it, which was at most one interval before
        assert time.monotonic() - quiet >= 2.0 - 0.25 - 0.05
        record = json.loads((tmp_path / "state" / agent.LAST_STOP_FILE).read_text())
        assert "the cluster's head does not answer" in record["reason"]
    finally:
        listener.close()
        process.terminate()
        process.wait(timeout=10)


def _ready(listener: socket.socket) -> bool:
    import select

    readable, _, _ = select.select([listener], [], [], 0.05)
    return bool(readable)


def test_the_step_tells_each_node_its_part_and_a_lone_instance_nothing_new() -> None:
    from dataclasses import replace

    from orchestrate.core.api.hoststeps import ClusterContext, StepContext
    from orchestrate.plugins.host.autostop.step import agent_config

    lone = StepContext(instance="nb", gpu=None, notebook_image="img", autostop="60m")
    assert "cluster_role" not in agent_config(lone, 3600.0)
    worker = ClusterContext(
        name="lab", role="worker", index=1, size=2, head_address="10.0.0.2",
        node_address="10.0.0.3",
    )  # fmt: skip
    config = Config.from_dict(agent_config(replace(lone, cluster=worker), 3600.0))
    assert (config.cluster_role, config.head_address, config.ray_port) == (
        "worker", "10.0.0.2", 6379,
    )  # fmt: skip
    assert config.ray_container == "orchestrate-ray-head"
