"""The whole seed workflow, end to end, on the test bed.

`orchestrate launch --provider gcp --profile e2e` talks to the fake GCE API over real HTTP
through libcloud's real driver; the instance it gets resolves to the bed's real sshd; host
steps run for real (no accelerator: this machine has no GPU); the real Jupyter image runs
under the real Docker engine; the tunnel is real, and so are the HTTP requests through it.

The commands that hold the terminal (a foreground tunnel, `logs --follow`, `ssh`) also run
here on a real pty, ended as a user ends them: Ctrl-C typed on the terminal, SIGTERM, a kill.
Each ends with exit 130 or 0 and one clear line, and leaves nothing behind: no process of
ours here, no command left running on the host (the bed's host is this machine, so its
processes are visible here), and a state row that describes what is really alive.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bed.docker_engine import docker
from tests.reliability.support import (
    command_lines,
    launch_args,
    status_json,
    tunnel_processes,
    wait_for,
)
from tests.support.e2e import Bed, gcp_bed, trust_for
from tests.support.terminal import CTRL_C, Terminal

pytestmark = [pytest.mark.bed, pytest.mark.slow]

URL = re.compile(r"^http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)$", re.M)


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def put_json(port: int, path: str, body: dict) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PUT", path, json.dumps(body), {"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.fixture
def bed(
    orch_home: Path, gce_api, gce_credentials: Path, ssh_host, docker_engine, jupyter_image
) -> Iterator[Bed]:
    with gcp_bed(orch_home, gce_api, gce_credentials, ssh_host, jupyter_image) as made:
        yield made


def test_launch_converges_and_down_cleans(bed: Bed, tmp_path: Path) -> None:
    first = bed.cli("launch", "nb", "--profile", "e2e", "--detach", "--no-browser")
    found = URL.search(first.stdout)
    assert found, first.stdout
    port, token = int(found.group(1)), found.group(2)
    assert port == bed.local_port
    assert "host set up:" in first.stderr and "notebook" in first.stderr

    # Jupyter answers through the tunnel with the token, and refuses without it.
    status, body = get(port, f"/api/status?token={token}")
    assert status == 200 and b"started" in body
    assert get(port, "/api/status")[0] == 403

    # The fake cloud holds one CPU instance, created through the real API.
    instances = bed.gce.instances
    assert list(instances) == ["nb"]
    inserts = bed.gce.calls("POST", "/instances")
    assert len(inserts) == 1
    assert "guestAccelerators" not in (inserts[0].body or {})

    # The container publishes on the host's loopback only.
    published = docker("port", bed.container).stdout
    assert published.strip() == f"8888/tcp -> 127.0.0.1:{bed.remote_port}"

    # logs shows Jupyter's start-up.
    logs = bed.cli("logs", "nb")
    assert "Jupyter Notebook" in logs.stdout or "Serving notebooks" in logs.stdout

    # A notebook written through Jupyter lands in the host folder.
    notebook = {
        "type": "notebook",
        "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5},
    }
    # The bed's host is this machine, so its notebooks folder outlives each test: a unique name.
    saved = f"{bed.container}.ipynb"
    assert put_json(port, f"/api/contents/{saved}?token={token}", notebook) == 201

    # A second launch converges: no new instance, zero steps, the same URL.
    second = bed.cli("launch", "nb", "--profile", "e2e", "--detach", "--no-browser")
    assert "0 steps applied" in second.stderr
    assert URL.search(second.stdout).group(0) == found.group(0)
    assert len(bed.gce.calls("POST", "/instances")) == 1

    # status tells the truth from the cloud.
    info = json.loads(bed.cli("status", "nb", "--json").stdout)[0]
    assert info["status"] == "running" and info["zone"] == "us-east1-d"
    assert info["tunnel"] == f"localhost:{port}"
    assert re.fullmatch(r"[0-9a-f]{16}", info["setup_hash"] or "")
    # Priced from what launch stored (n1-standard-2, no GPU), autostop off is warned about.
    assert any("so far at $" in note for note in info["notes"]), info["notes"]
    assert any("running without autostop" in note for note in info["notes"]), info["notes"]

    # stop, then start: the instance comes back and so do the container and the tunnel.
    bed.cli("stop", "nb")
    assert bed.gce.instances["nb"]["status"] == "TERMINATED"
    assert get(port, f"/api/status?token={token}")[0] != 200 if _port_open(port) else True
    started = bed.cli("start", "nb", "--detach", "--no-browser")
    assert URL.search(started.stdout)
    assert get(port, f"/api/status?token={token}")[0] == 200

    # down copies the notebooks home first, then deletes everything.
    target = tmp_path / "synced"
    bed.cli("down", "nb", "--yes", "--sync-notebooks", str(target))
    assert (target / saved).is_file()
    assert bed.gce.instances == {}
    assert json.loads(bed.cli("status", "--offline", "--json").stdout) == []
    assert not _port_open(port)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_on_foreground_tunnel_leaves_instance_up(bed: Bed) -> None:
    bed.cli("launch", "nb", "--profile", "e2e", "--detach", "--no-browser")
    bed.cli("tunnel", "nb", "--close")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrate.core.app.cli", "tunnel", "nb"],
        cwd=bed.work,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = URL.search(line)
        assert found, line
        assert get(int(found.group(1)), f"/api/status?token={found.group(2)}")[0] == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not _port_open(int(found.group(1)))
    info = json.loads(bed.cli("status", "nb", "--json").stdout)[0]
    assert info["status"] == "running"
    assert bed.gce.instances["nb"]["status"] == "RUNNING"


def test_startup_script_mode_sets_the_host_up_at_boot(bed: Bed) -> None:
    """`bootstrap = "startup-script"`: the setup travels in metadata and launch waits.

    The fake cloud has no guest agent to run the startup script at boot, so the test plays
    that part: it takes the script from the instance's metadata and runs it as root on the
    machine that stands in for the VM, exactly once, as GCE would at first boot.
    """
    from orchestrate.core.host.bootstrap import DONE_FILE

    Path(DONE_FILE).unlink(missing_ok=True)
    profile = bed.work / "orchestrate.toml"
    profile.write_text(
        profile.read_text().replace(
            'autostop = "off"', 'autostop = "off"\nbootstrap = "startup-script"'
        )
    )
    trust_for(bed.home, profile)  # the user trusts the edited file again
    dry = bed.cli("launch", "nb", "--profile", "e2e", "--dry-run")
    assert '"key": "startup-script"' in dry.stdout
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrate.core.app.cli",
            "launch",
            "nb",
            "--profile",
            "e2e",
            "--detach",
            "--no-browser",
        ],
        cwd=bed.work,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        script = None
        for _ in range(300):
            instance = bed.gce.instances.get("nb")
            if instance is not None:
                items = instance.get("metadata", {}).get("items", [])
                script = next((i["value"] for i in items if i["key"] == "startup-script"), None)
                break
            time.sleep(0.1)
        assert script is not None, "the instance carries no startup-script"
        token = json.loads(bed.cli("status", "nb", "--offline", "--json").stdout)[0]
        row_token = _state_token(bed)
        assert row_token and row_token not in script, "the token must not reach metadata"
        stage_steps = script.split("STEP_NAMES=(", 1)[1].split(")", 1)[0].split()
        assert "docker" in stage_steps, "the startup script sets docker up"
        booted = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300)
        assert booted.returncode == 0, booted.stdout + booted.stderr
        assert Path(DONE_FILE).is_file()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        Path(DONE_FILE).unlink(missing_ok=True)
    assert proc.returncode == 0, err
    assert "startup script finished" in err
    found = URL.search(out)
    assert found and token["status"] in ("creating", "running")
    assert get(int(found.group(1)), f"/api/status?token={found.group(2)}")[0] == 200


def _state_token(bed: Bed) -> str | None:
    import sqlite3

    db = sqlite3.connect(bed.home / "state" / "state.db")
    try:
        row = db.execute("SELECT token FROM instances WHERE name = 'nb'").fetchone()
    finally:
        db.close()
    return row[0] if row else None


def test_ssh_config_pins_the_host_key_after_launch(bed: Bed) -> None:
    """A plain `ssh -F <orchestrate's config> NAME` (what `ssh NAME` does once the config is
    included) reaches the host with the key orchestrate pinned at first contact."""
    bed.cli("launch", "nb", "--profile", "e2e", "--detach", "--no-browser")
    config = bed.home / "config" / "ssh_config"
    known = (bed.home / "config" / "known_hosts").read_text()
    assert f"orchestrate-nb {bed.ssh.host_key.split()[0]} {bed.ssh.host_key.split()[1]}" in known
    result = subprocess.run(
        ["ssh", "-F", str(config), "-o", "BatchMode=yes", "nb", "uname", "-n"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == os.uname().nodename


def _terminal(bed: Bed, *args: str) -> Terminal:
    return Terminal(
        [sys.executable, "-m", "orchestrate.core.app.cli", *args],
        cwd=bed.work,
        env=os.environ.copy(),
    )


def _status(bed: Bed) -> dict[str, Any]:
    [row] = status_json(bed, "nb", "--offline")
    return row


def _tunnel(bed: Bed) -> tuple[str, str | None]:
    row = _status(bed)
    return row["tunnel"], row["tunnel_kind"]


def _session_processes(leader: int) -> list[int]:
    """Processes still in the session the test's command led (its children included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == leader and fields[0] != "Z":  # session id, state
            found.append(int(entry.name))
    return found


def _host_processes(*argv: str) -> list[int]:
    """Processes on the bed's host whose command line is exactly `argv`."""
    wanted = [a.encode() for a in argv]
    return [pid for pid, cmdline in command_lines() if cmdline[: len(wanted)] == wanted]


def test_status_describes_the_tunnel_that_is_alive_detached_or_foreground(bed: Bed) -> None:
    first = bed.cli(*launch_args())
    port = int(URL.search(first.stdout).group(1))  # type: ignore[union-attr]
    assert _tunnel(bed) == (f"localhost:{port}", "detached")

    # A foreground launch with a live background tunnel reuses it: no second tunnel on
    # the next port, and status goes on naming the one that serves.
    term = _terminal(bed, "launch", "nb", "--profile", "e2e", "--no-browser")
    try:
        found = term.expect(URL.pattern)
        assert int(found.group(1)) == port, term.text
        assert term.wait() == 0, term.text
    finally:
        term.close()
    assert "the background tunnel keeps serving" in term.text, term.text
    assert len(tunnel_processes(bed)) == 1
    assert _tunnel(bed) == (f"localhost:{port}", "detached")

    # A foreground tunnel replaces the background one on its port; status names it, its
    # pid and port, while it is open, and forgets it however it ends.
    for ending in ("ctrl-c", "sigterm", "sigkill"):
        term = _terminal(bed, "tunnel", "nb", "--no-browser")
        try:
            term.expect("Ctrl-C closes it")
            shown = _status(bed)
            assert shown["tunnel"] == f"localhost:{port}", (ending, shown, term.text)
            assert (shown["tunnel_kind"], shown["tunnel_pid"]) == ("foreground", term.proc.pid)
            assert tunnel_processes(bed) == [], "the background tunnel was replaced"
            text = bed.cli("status", "nb", "--offline").stdout
            assert f"tunnel=localhost:{port} (foreground, pid {term.proc.pid})" in text, text
            if ending == "ctrl-c":
                term.send(CTRL_C)
                assert term.wait(30) == 0, term.text
            elif ending == "sigterm":
                term.proc.send_signal(signal.SIGTERM)
                assert term.wait(30) == 0, term.text
            else:
                term.proc.kill()  # a crash: nothing of ours runs to clear the row
                assert term.wait(30) == -signal.SIGKILL
        finally:
            term.close()
        assert "Traceback" not in term.text, term.text
        shown = _status(bed)
        assert (shown["tunnel"], shown["tunnel_kind"], shown["url"]) == ("none", None, None), (
            ending,
            shown,
        )
        assert not _port_open(port), ending
        assert _session_processes(term.proc.pid) == [], ending
    assert shown["status"] == "running"


def test_ctrl_c_on_logs_follow_ends_it_here_and_on_the_host(bed: Bed) -> None:
    bed.cli(*launch_args())
    before = _status(bed)
    follow = ("docker", "logs", "--tail", "5", "-f", "--", bed.container)
    # First over the background tunnel's shared connection, then over a direct one.
    for shared in (True, False):
        if not shared:
            bed.cli("tunnel", "nb", "--close")
            before = _status(bed)
        term = _terminal(bed, "logs", "nb", "--follow", "--tail", "5")
        try:
            wait_for("docker logs -f on the host", lambda: _host_processes(*follow), timeout=60)
            term.expect(r"\S")  # a log line arrived
            code, said = term.interrupt()
        finally:
            term.close()
        assert code == 130, term.text
        assert said == ["orchestrate: interrupted"], (shared, term.text)
        assert "Traceback" not in term.text
        wait_for("the host's docker logs to end", lambda: not _host_processes(*follow), timeout=15)
        assert _session_processes(term.proc.pid) == []
        after = _status(bed)
        assert (after["status"], after["tunnel"]) == (before["status"], before["tunnel"])


def test_ctrl_c_in_ssh_reaches_the_remote_command_and_leaves_nothing(bed: Bed) -> None:
    bed.cli(*launch_args())
    before = _status(bed)

    # Interactive: Ctrl-C ends the command running in the remote shell, not the shell.
    naptime = f"{random.randint(10_000, 99_999)}.5"
    term = _terminal(bed, "ssh", "nb")
    try:
        term.send(b"echo READY-$((6*7))\n")
        term.expect("READY-42", timeout=60)
        term.send(f"sleep {naptime}\n".encode())
        wait_for("the remote sleep", lambda: _host_processes("sleep", naptime), timeout=30)
        term.send(CTRL_C)
        wait_for("the remote sleep to end", lambda: not _host_processes("sleep", naptime))
        term.send(b"echo STILL-$((6*7))\n")
        term.expect("STILL-42")
        term.send(b"exit\n")
        assert term.wait(30) == 0, term.text
    finally:
        term.close()
    assert "Traceback" not in term.text
    assert _session_processes(term.proc.pid) == []

    # `ssh NAME -- CMD`: Ctrl-C ends CMD on the host, and the command here with it.
    naptime = f"{random.randint(10_000, 99_999)}.5"
    term = _terminal(bed, "ssh", "nb", "--", "sleep", naptime)
    try:
        wait_for("the remote sleep", lambda: _host_processes("sleep", naptime), timeout=60)
        code, said = term.interrupt()
    finally:
        term.close()
    assert code == 130, term.text  # the command's own status, as a shell reports it
    assert said == ["Connection to 127.0.0.1 closed."], term.text
    wait_for("the remote sleep to end", lambda: not _host_processes("sleep", naptime), timeout=15)
    assert _session_processes(term.proc.pid) == []
    after = _status(bed)
    assert (after["status"], after["tunnel"]) == (before["status"], before["tunnel"])
