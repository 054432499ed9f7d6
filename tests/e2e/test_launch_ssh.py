"""The seed workflow on an existing host: `launch --provider ssh --host user@address:port`.

No cloud at all: the test bed's real sshd is "one's own workstation". Everything after the
provider is the same pipeline as on a cloud VM (probe, host steps, the real Jupyter image
under the real Docker engine, the real tunnel, real HTTP through it), and `down` removes the
container and forgets the host without touching the user's files or the machine.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrate.core.flows.background import control_path, is_our_tunnel
from orchestrate.core.store.paths import state_db
from orchestrate.core.store.state import InstanceRow, State

from tests.bed.docker_engine import docker
from tests.support.e2e import Bed, adopt_bed_key, bed_profile, make_bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]

URL = re.compile(r"^http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)$", re.M)


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def put_notebook(port: int, name: str, token: str) -> int:
    body = {
        "type": "notebook",
        "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
    }
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "PUT",
            f"/api/contents/{name}?token={token}",
            json.dumps(body),
            {"Content-Type": "application/json"},
        )
        return conn.getresponse().status
    finally:
        conn.close()


def container_state(name: str) -> str | None:
    found = docker("inspect", "-f", "{{.State.Status}}", name, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture
def bed(orch_home: Path, ssh_host, docker_engine, jupyter_image) -> Iterator[Bed]:  # type: ignore[no-untyped-def]
    """A profile with no provider table at all: the host comes from --host."""
    adopt_bed_key(orch_home, ssh_host.key_path)
    made = make_bed(orch_home, Path.cwd(), None, ssh_host, jupyter_image)
    (made.work / "orchestrate.toml").write_text(bed_profile(made, "box", "ssh"), encoding="utf-8")
    yield made
    leftover = made.cli("status", "--offline", "--json", check=False)
    for info in json.loads(leftover.stdout or "[]"):
        made.cli("down", info["name"], "--yes", check=False)
    docker("rm", "-f", made.container, check=False)


def host_flag(bed: Bed) -> str:
    return f"{bed.ssh.user}@{bed.ssh.address}:{bed.ssh.port}"


def test_dry_run_prints_the_ssh_plan(bed: Bed) -> None:
    out = bed.cli("launch", "nb", "--profile", "box", "--host", host_flag(bed), "--dry-run")
    assert f"SSH {host_flag(bed)}" in out.stdout
    assert '"creates": "nothing: the host is used as it is"' in out.stdout
    assert container_state(bed.container) is None


def test_launch_on_an_existing_host_and_down_keeps_the_machine(bed: Bed) -> None:
    first = bed.cli(
        "launch", "nb", "--profile", "box", "--host", host_flag(bed), "--detach", "--no-browser"
    )
    found = URL.search(first.stdout)
    assert found, first.stdout + first.stderr
    port, token = int(found.group(1)), found.group(2)
    assert port == bed.local_port
    assert get(port, f"/api/status?token={token}") == 200
    assert get(port, "/api/status") == 403
    assert container_state(bed.container) == "running"

    info = json.loads(bed.cli("status", "nb", "--json").stdout)[0]
    assert info["status"] == "running" and info["provider"] == "ssh"

    saved = f"{bed.container}.ipynb"
    assert put_notebook(port, saved, token) == 201
    on_host = Path(f"~{bed.ssh.user}").expanduser() / "notebooks" / saved
    assert on_host.is_file()

    # Converges: the same host, nothing to apply, the same URL.
    second = bed.cli(
        "launch", "nb", "--profile", "box", "--host", host_flag(bed), "--detach", "--no-browser"
    )
    assert "0 steps applied" in second.stderr
    again = URL.search(second.stdout)
    assert again and again.group(0) == found.group(0)

    # Another --host for the same name is refused, before anything is sent.
    moved = bed.cli(
        "launch", "nb", "--profile", "box", "--host", f"{bed.ssh.user}@127.0.0.2:22",
        "--detach", "--no-browser", check=False,
    )  # fmt: skip
    assert moved.returncode == 2
    assert moved.stderr.strip().splitlines()[-1] == (
        f"orchestrate: nb is on {host_flag(bed)}, not {bed.ssh.user}@127.0.0.2:22 "
        "(`orchestrate down nb` first to move it there, or launch it under another name)"
    )

    # down: the container goes, the host is forgotten, the machine and the files stay.
    try:
        bed.cli("down", "nb", "--yes")
        assert container_state(bed.container) is None
        assert json.loads(bed.cli("status", "--offline", "--json").stdout) == []
        assert bed.ssh.sshd.running
        assert on_host.is_file()
    finally:
        on_host.unlink(missing_ok=True)


def labelled(bed: Bed, suffix: str, label: str) -> str:
    """A container made (not started) with `label`: one orchestrate left behind (a GPU
    check's, cut short) when the label names our instance, someone else's otherwise."""
    name = f"{bed.container}-{suffix}"
    docker("create", "--label", label, "--name", name, bed.image, "true")
    return name


def test_stop_and_down_remove_our_containers_not_the_machine(bed: Bed) -> None:
    bed.cli(
        "launch", "nb", "--profile", "box", "--host", host_flag(bed), "--detach", "--no-browser"
    )
    notebook = docker("inspect", "-f", '{{index .Config.Labels "orchestrate-name"}}', bed.container)
    assert notebook.stdout.strip() == "nb", "the notebook container carries the name label"
    ours = labelled(bed, "check", "orchestrate-name=nb")
    other = labelled(bed, "other", "orchestrate-name=someone-else")
    try:
        bed.cli("stop", "nb")
        assert bed.ssh.sshd.running
        assert container_state(bed.container) is None and container_state(ours) is None
        assert container_state(other) == "created", "another instance's container stays"
        started = bed.cli("start", "nb", "--detach", "--no-browser")
        found = URL.search(started.stdout)
        assert found and get(int(found.group(1)), f"/api/status?token={found.group(2)}") == 200
        assert container_state(bed.container) == "running"

        ours = labelled(bed, "check2", "orchestrate-name=nb")
        bed.cli("down", "nb", "--yes")
        assert container_state(bed.container) is None and container_state(ours) is None
        assert container_state(other) == "created" and bed.ssh.sshd.running
    finally:
        for name in (ours, other):
            docker("rm", "-f", name, check=False)


# -- a live detached tunnel lends its connection --------------------------------------------
# sshd's own log proves which commands logged in: a command served over the tunnel's control
# socket adds no "Accepted publickey" line.

LAUNCH = ("launch", "nb", "--profile", "box", "--host")


def logins(bed: Bed) -> int:
    return str(bed.ssh.sshd.log()).count("Accepted publickey")


def row(name: str = "nb") -> InstanceRow:
    with State(state_db()) as state:
        found = state.get(name)
    assert found is not None
    return found


def test_live_tunnel_serves_launch_status_and_logs(bed: Bed) -> None:
    first = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    url = URL.search(first.stdout)
    assert url, first.stdout + first.stderr
    pid = row().tunnel_pid
    assert is_our_tunnel(pid, "nb")
    assert control_path("nb").is_socket()

    before = logins(bed)
    again = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    assert "0 steps applied" in again.stderr
    same = URL.search(again.stdout)
    assert same and same.group(0) == url.group(0)
    assert row().tunnel_pid == pid, "the live tunnel serving the same notebook is kept"

    foreground = bed.cli(*LAUNCH, host_flag(bed), "--no-browser")
    assert foreground.stdout.strip() == url.group(0)
    assert "the background tunnel keeps serving" in foreground.stderr

    bed.cli("status", "nb")
    logs = bed.cli("logs", "nb", "--tail", "5")
    assert logs.stdout.strip(), "the container's log lines came back through the tunnel"
    assert logins(bed) == before, bed.ssh.sshd.log()[-2000:]

    # A tunnel killed outright leaves its socket behind: the next command connects itself.
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while is_our_tunnel(pid, "nb"):
        time.sleep(0.05)
    assert control_path("nb").is_socket()
    bed.cli("logs", "nb", "--tail", "5")
    assert logins(bed) == before + 1


def test_closing_the_tunnel_removes_its_socket(bed: Bed) -> None:
    bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    assert control_path("nb").is_socket()
    bed.cli("tunnel", "nb", "--close")
    assert not control_path("nb").exists()


# -- a warm relaunch: Jupyter's answer comes with the probe -----------------------------------


def last_ready() -> str:
    with State(state_db()) as state:
        ready = [e.message for e in state.events("nb") if e.kind == "ready"]
    assert ready, "a launch that printed its URL records that Jupyter answered"
    return ready[-1]


def test_warm_relaunch_takes_jupyters_answer_from_the_probe(bed: Bed) -> None:
    first = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    url = URL.search(first.stdout)
    assert url, first.stdout + first.stderr
    assert last_ready().startswith("jupyter answers through the tunnel"), "set up just now"

    # Set up, Jupyter answering: the probe's answer is the check, no request through the
    # tunnel (over a direct connection here, the tunnel's own connection below).
    bed.cli("tunnel", "nb", "--close")
    warm = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    assert "0 steps applied" in warm.stderr
    again = URL.search(warm.stdout)
    assert again and again.group(0) == url.group(0)
    assert last_ready().startswith("jupyter answered the probe on the host")
    port, token = int(again.group(1)), again.group(2)
    assert get(port, f"/api/status?token={token}") == 200

    # The container runs but Jupyter does not answer (stopped): the probe says so within
    # its bound, and the launch waits for Jupyter through the tunnel as before, until it
    # answers again.
    docker("kill", "--signal", "STOP", bed.container)
    resume = threading.Timer(5.0, docker, ("kill", "--signal", "CONT", bed.container))
    resume.start()
    try:
        stalled = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    finally:
        resume.join()
    assert "0 steps applied" in stalled.stderr
    same = URL.search(stalled.stdout)
    assert same and same.group(0) == url.group(0)
    assert last_ready().startswith("jupyter answers through the tunnel")
    assert get(port, f"/api/status?token={token}") == 200


def test_detached_relaunch_logs_in_once_and_its_failure_reaches_the_foreground(
    bed: Bed, tmp_path: Path
) -> None:
    """`launch --detach` on a host set up before: the background tunnel process makes the
    one SSH login and runs the launch's probe; the launch prints what it always did."""
    first = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    url = URL.search(first.stdout)
    assert url, first.stdout + first.stderr
    bed.cli("tunnel", "nb", "--close")

    before = logins(bed)
    again = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    assert "host already set up: 1 probe, 0 steps applied" in again.stderr
    same = URL.search(again.stdout)
    assert same and same.group(0) == url.group(0)
    assert is_our_tunnel(row().tunnel_pid, "nb")
    assert get(int(same.group(1)), f"/api/status?token={same.group(2)}") == 200
    assert logins(bed) == before + 1, bed.ssh.sshd.log()[-2000:]

    # The container is gone: the probe the background process ran says so, and the launch
    # runs the notebook step over that process's connection, then waits for Jupyter
    # through the new tunnel. Still one login.
    bed.cli("tunnel", "nb", "--close")
    docker("rm", "-f", bed.container)
    before = logins(bed)
    repaired = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser")
    assert "1 step(s) applied (notebook)" in repaired.stderr, repaired.stderr
    fixed = URL.search(repaired.stdout)
    assert fixed and fixed.group(0) == url.group(0)
    assert get(int(fixed.group(1)), f"/api/status?token={fixed.group(2)}") == 200
    assert last_ready().startswith("jupyter answers through the tunnel")
    assert logins(bed) == before + 1, bed.ssh.sshd.log()[-2000:]

    # The background process refuses the host (another key is pinned): the launch fails
    # with the one line it gave when it connected itself, and leaves no tunnel.
    bed.cli("tunnel", "nb", "--close")
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with State(state_db()) as state:
        state.update("nb", host_key=" ".join(other.with_suffix(".pub").read_text().split()[:2]))
    failed = bed.cli(*LAUNCH, host_flag(bed), "--detach", "--no-browser", check=False)
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 1, failed.stderr
    assert "host key" in lines[-1] and "changed" in lines[-1], failed.stderr
    assert "orchestrate forget-host-key nb" in lines[-1] and "Traceback" not in failed.stderr
    assert not URL.search(failed.stdout)
    assert not is_our_tunnel(row().tunnel_pid, "nb")
    assert json.loads(bed.cli("status", "nb", "--offline", "--json").stdout)[0]["name"] == "nb"
