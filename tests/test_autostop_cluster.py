"""Cluster autostop: the head counts Ray's work and stops its workers first; each worker
honours a fresh stop request from the head, and follows the head by its own window.

The decisions run for real with windows of seconds: the pure `decide` with observations as
the agent makes them, and a worker's agent process (``--loop``) watching a real TCP
listener that stands for the head's GCS port and a real folder that stands for its Ray temp
folder, with the power-off command replaced by a marker file (powering the test machine off
is the one thing a test cannot do). The head's side, which needs Ray, runs on the bed's
cluster in ``tests/e2e/test_cluster.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.plugins.host.autostop import agent
from orchestrate.plugins.host.autostop.agent import Config, KernelView, Observation, decide

from tests.test_autostop_agent import AGENT, hold_for, wait_for

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
    fields: dict[str, Any] = {"connections": [], "logins": [], **kw}
    return Observation(now=now, boot_id="boot-1", jupyter=KernelView(reachable=True), **fields)


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
    process = _worker_agent(tmp_path, port, idle_seconds=2.0, interval=0.25)
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
        # A window after the last check that heard it. That check came before `quiet`, by up
        # to an interval plus however late this loop noticed (a loaded machine has made that
        # 0.34 s), so the bound leaves two intervals: it still tells "a window later" from
        # "at once".
        assert time.monotonic() - quiet >= 2.0 - 2 * 0.25 - 0.1
        record = json.loads((tmp_path / "state" / agent.LAST_STOP_FILE).read_text())
        assert "the cluster's head does not answer" in record["reason"]
    finally:
        listener.close()
        process.terminate()
        process.wait(timeout=10)


def _worker_agent(
    folder: Path,
    head_port: int,
    before_loop: Callable[[float], None] | None = None,
    **config: Any,
) -> subprocess.Popen[bytes]:
    """A worker's real agent: configured in `folder` (state, log, config), its power-off
    command appending to ``POWERED-OFF`` there, armed (``--rearm``, as the step does), then
    ``--loop``; `before_loop` gets the arming time first."""
    marker = folder / "POWERED-OFF"
    path = folder / "autostop.json"
    path.write_text(
        json.dumps({
            "port": 1, "jupyter_url": "http://127.0.0.1:1", "token": "",
            "poweroff_command": f"echo off >> {marker}", "state_dir": str(folder / "state"),
            "log_file": str(folder / "log"), "console": False, "cluster_role": "worker",
            "head_address": "127.0.0.1", "ray_port": head_port, "ray_container": "", **config,
        })
    )  # fmt: skip
    python = shutil.which("python3") or "/usr/bin/python3"
    argv = [python, str(AGENT), "--config", str(path)]
    subprocess.run([*argv, "--rearm"], check=True, capture_output=True, timeout=30)
    if before_loop is not None:
        before_loop(json.loads((folder / "state" / agent.STATE_FILE).read_text())["armed_at"])
    return subprocess.Popen(
        [*argv, "--loop"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


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
    assert config.ray_container == "orchestrate-ray-worker"  # its own, stopped before power-off
    assert config.stop_request_file() == (
        "/var/lib/orchestrate/ray/lab-1/tmp/" + agent.STOP_REQUEST_NAME
    )
    assert config.ray_container_tmp == "/tmp/ray"  # where the worker's container mounts it
    head = ClusterContext(
        name="lab", role="head", index=0, size=2, head_address="10.0.0.2",
        node_address="10.0.0.2",
    )  # fmt: skip
    config = Config.from_dict(agent_config(replace(lone, cluster=head), 3600.0))
    assert (config.cluster_role, config.ray_container) == ("head", "orchestrate-ray-head")


# -- the head's stop request ---------------------------------------------------------------

ARMED = 1000.0


def _armed() -> dict[str, Any]:
    """A worker's state as `--rearm` (launch, start) leaves it."""
    return {"armed_at": ARMED, "last_active": ARMED, "last_check": ARMED, "boot_id": "boot-1"}


def test_a_fresh_request_powers_a_worker_off_at_once_while_the_head_still_answers() -> None:
    obs = _obs(1002.0, head_answers=True, stop_request=1001.5, booted_at=500.0)
    state, action, _ = decide(_armed(), obs, WORKER)
    assert action == agent.POWEROFF, "at once: not a window later"
    assert state["head_request"] == agent.HONOURED


def test_a_request_from_before_the_last_arming_or_the_boot_is_stale() -> None:
    """Left from before a stop: a freshly started node must not power off on it."""
    before_arming = _obs(1002.0, head_answers=True, stop_request=ARMED - 1, booted_at=500.0)
    state, action, _ = decide(_armed(), before_arming, WORKER)
    assert (action, state["head_request"]) == (agent.ACTIVE, agent.STALE)
    before_boot = _obs(1002.0, head_answers=True, stop_request=900.0, booted_at=950.0)
    state, action, _ = decide({}, before_boot, WORKER)  # never armed: the boot alone decides
    assert (action, state["head_request"]) == (agent.ACTIVE, agent.STALE)
    fresh = _obs(1002.0, head_answers=True, stop_request=960.0, booted_at=950.0)
    assert decide({}, fresh, WORKER)[1] == agent.POWEROFF


def test_a_worker_someone_is_logged_in_to_declines_and_its_window_decides() -> None:
    obs = _obs(1002.0, head_answers=True, stop_request=1001.0, logins=["ana on pts/0"])
    state, action, _ = decide(_armed(), obs, WORKER)
    assert (action, state["head_request"]) == (agent.ACTIVE, agent.DECLINED)
    assert obs.local_use() == ["logged in: ana on pts/0"]
    # A setup stage or the head answering is no use of this node: the request is honoured.
    busy_elsewhere = _obs(1002.0, head_answers=True, stop_request=1001.0, setups=[3.0])
    assert decide(_armed(), busy_elsewhere, WORKER)[1] == agent.POWEROFF


def test_only_a_worker_acts_on_a_request() -> None:
    obs = _obs(1002.0, ray=["ray: 1 GPU in use"], stop_request=1001.0)
    state, action, _ = decide(_armed(), obs, HEAD)
    assert action == agent.ACTIVE and "head_request" not in state


def test_what_the_head_did_about_its_workers_reads_in_one_line() -> None:
    both = {"asked": ["10.0.0.3", "10.0.0.4"], "left": ["10.0.0.3", "10.0.0.4"], "seconds": 6.2}
    assert agent.workers_note(both) == "asked 2 workers to stop; 2 left Ray within 6 s"
    one_stayed = {**both, "left": ["10.0.0.3"], "seconds": 61.0, "unreachable": [
        "10.0.0.5 (GetTimeoutError)"]}  # fmt: skip
    assert agent.workers_note(one_stayed) == (
        "asked 2 workers to stop; 1 left Ray within 61 s; still in Ray: 10.0.0.4 (stops a window "
        "after the head); could not reach 10.0.0.5 (GetTimeoutError) (stops a window after "
        "the head)"
    )
    assert agent.workers_note({"asked": [], "left": []}) == "no worker in Ray to ask"
    assert agent.workers_note(None, "Error: No such container: orchestrate-ray-head") == (
        "could not ask the workers to stop (Error: No such container: orchestrate-ray-head): "
        "each stops a window after the head"
    )


def test_status_shows_what_the_head_did_about_its_workers() -> None:
    from orchestrate.plugins.host.autostop import report
    from orchestrate.plugins.host.autostop.step import HostAutostop

    seen = HostAutostop(probed=True, last_stop={
        "message": "stopped by autostop after 60 min idle", "time": "2026-12-03T17:00:00Z",
        "reason": "no connection to port 8888", "cluster": "asked 2 workers to stop; 2 left "
        "Ray within 6 s",
    })  # fmt: skip
    assert report.last_stop_line(seen) == (
        "stopped by autostop after 60 min idle (2026-12-03T17:00:00Z; no connection to port "
        "8888; asked 2 workers to stop; 2 left Ray within 6 s)"
    )


@pytest.fixture
def head_port() -> Iterator[int]:
    """A listener that stands for the head's GCS port, accepting and closing connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(timeout=5)
        listener.close()


def test_a_worker_agent_ignores_a_stale_request_and_consumes_a_fresh_one_once(
    tmp_path: Path, head_port: int
) -> None:
    """The worker's agent for real (``--rearm`` as the step runs it, then ``--loop``): the
    head answers throughout and the window is long, so only a request can power it off.
    The request is a real file in a folder that stands for the worker's Ray temp folder; no
    Ray container is named (its stop is the e2e test's)."""
    ray_tmp = tmp_path / "ray-tmp"
    ray_tmp.mkdir()
    request = ray_tmp / agent.STOP_REQUEST_NAME
    marker = tmp_path / "POWERED-OFF"

    def stale_request(armed: float) -> None:
        """Left from before the last arming (a stop, then a start): ignored, and consumed."""
        request.write_text("{}")
        os.utime(request, (armed - 60, armed - 60))

    process = _worker_agent(
        tmp_path, head_port, idle_seconds=300.0, interval=0.2, ray_tmp_dir=str(ray_tmp),
        before_loop=stale_request,
    )  # fmt: skip
    try:
        wait_for(lambda: not request.exists(), timeout=30)
        hold_for(marker.exists, 1.0)
        assert "ignored the head's stop request" in (tmp_path / "log").read_text()
        # A fresh one: off at the next check, and the file gone before the power-off ran.
        request.write_text('{"from": "10.0.0.2"}')
        wait_for(marker.exists, timeout=30)
        assert not request.exists()
        hold_for(lambda: marker.read_text().count("off") > 1, 1.5)  # once, not every check
        record = json.loads((tmp_path / "state" / agent.LAST_STOP_FILE).read_text())
        assert record["reason"] == "the cluster's head asked: the whole cluster has been idle"
        assert "cluster" not in record  # a worker asks nobody
        log = (tmp_path / "log").read_text()
        assert "the cluster's head asked this node to stop" in log
    finally:
        process.terminate()
        process.wait(timeout=10)
