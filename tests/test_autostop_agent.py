"""The autostop agent's decision logic, for real on the test bed host.

The bed's "VM" is this machine, so the agent runs here exactly as it runs on a cloud host
(``python3 autostop.py --loop``, detached from the test), watching the real
``/proc/net/tcp``, a real Jupyter (the bed's offline image, in Docker, published on
127.0.0.1 like the product does) through its REST API with the token, and real SSH sessions
through the bed's sshd. Two things differ from production, and only in configuration:

- the window is seconds instead of minutes, and checks run every 0.25 s instead of every
  minute;
- the power-off command writes a marker file instead (`--poweroff-command 'touch MARKER'`):
  powering the test machine off is the one thing a test cannot do.

How a busy kernel is made: a kernel is started through Jupyter's REST API (``POST
/api/kernels``), then ``docker exec`` runs a small jupyter_client script inside the container
that sends ``import time; time.sleep(60)`` to that kernel over its ZMQ ports and returns once
the kernel reports busy. It is the simplest real way (no websocket client in the standard
library, none installed here) and, unlike a browser's websocket, it opens no TCP connection
to the notebook port, so the test sees the kernel signal alone. The busy state it produces is
Jupyter's own: the server watches every kernel's iopub status, whoever sent the request.

A browser tab is a TCP connection through the tunnel: sshd on the host connects to the
notebook port (paramiko's ``direct-tcpip``, what ``orchestrate tunnel`` and ``ssh -L`` do),
and an HTTP keep-alive request through it stands for the page.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from orchestrate.plugins.host.autostop import agent
from orchestrate.plugins.host.autostop.agent import Config, KernelView, Observation, decide

from tests.bed.docker_engine import docker
from tests.bed.fixtures_host import SshHost
from tests.bed.jupyter_image import NotebookContainer, run_notebook

AGENT = Path(agent.__file__)
INTERVAL = 0.25


# -- pure decision logic (no bed) --------------------------------------------------------


def _obs(now: float, **kw: Any) -> Observation:
    return Observation(
        now=now,
        boot_id=kw.pop("boot_id", "boot-1"),
        connections=kw.pop("connections", []),
        jupyter=kw.pop("jupyter", KernelView(reachable=True)),
        logins=kw.pop("logins", []),
        setups=kw.pop("setups", []),
    )


CFG = Config(idle_seconds=60.0, interval=1.0)


def test_decide_counts_the_window_from_the_first_check() -> None:
    state, action, _ = decide({}, _obs(1000.0), CFG)
    assert action == agent.IDLE and state["last_active"] == 1000.0
    state, action, _ = decide(state, _obs(1059.0), CFG)
    assert action == agent.IDLE and state["idle_for_seconds"] == pytest.approx(59.0)
    state, action, _ = decide(state, _obs(1060.0), CFG)
    assert action == agent.POWEROFF


def test_decide_connection_login_busy_kernel_or_unreadable_jupyter_is_activity() -> None:
    for kw in (
        {"connections": ["127.0.0.1:40000 -> 127.0.0.1:8888"]},
        {"logins": ["alice on pts/0 from 10.0.0.1"]},
        {"jupyter": KernelView(reachable=True, kernels=1, busy=["kernel 1234 (python3)"])},
        {"jupyter": KernelView(reachable=True, error="HTTP 403 from /api/kernels")},
    ):
        state, action, _ = decide(
            {"last_active": 0.0, "last_check": 999.0}, _obs(1000.0, **kw), CFG
        )
        assert action == agent.ACTIVE, kw
        assert state["last_active"] == 1000.0 and state["idle_since"] is None


def test_decide_counts_from_the_latest_kernel_activity() -> None:
    prev = {"last_active": 900.0, "last_check": 999.0, "boot_id": "boot-1"}
    recent = KernelView(reachable=True, kernels=1, activity=[("kernel a", 990.0)])
    state, action, _ = decide(prev, _obs(1000.0, jupyter=recent), CFG)
    assert action == agent.ACTIVE and "active 10 s ago" in state["active"][0]
    # kernel activity within the window is activity ("no kernel activity newer than the
    # window"); the first check a whole window after it powers off
    state, action, _ = decide(state, _obs(1049.0, jupyter=recent), CFG)
    assert action == agent.ACTIVE and "active 59 s ago" in state["active"][0]
    state, action, _ = decide(state, _obs(1050.5, jupyter=recent), CFG)
    assert action == agent.POWEROFF and state["idle_for_seconds"] == 60.5
    # with a connection seen last at 1000, the host shows idle in between
    state, action, _ = decide({}, _obs(1000.0, connections=["a -> b"]), CFG)
    state, action, _ = decide(state, _obs(1030.0), CFG)
    assert action == agent.IDLE and state["idle_since"] == 1000.0


def test_decide_starts_over_after_a_reboot_or_a_gap() -> None:
    prev = {"last_active": 0.0, "last_check": 999.0, "boot_id": "boot-1"}
    state, action, note = decide(prev, _obs(1000.0, boot_id="boot-2"), CFG)
    assert (action, state["last_active"], note) == (agent.IDLE, 1000.0, "new boot")
    prev = {"last_active": 0.0, "last_check": 100.0, "boot_id": "boot-1"}
    state, action, note = decide(prev, _obs(1000.0), CFG)
    assert action == agent.IDLE and state["last_active"] == 1000.0 and "no check" in note


def test_decide_a_running_setup_is_activity_until_it_is_older_than_the_window() -> None:
    """The agent is armed before the driver install: a setup in progress keeps the host
    up, a setup stuck for longer than the window does not."""
    state, action, _ = decide({}, _obs(1000.0, setups=[10.0]), CFG)
    assert action == agent.ACTIVE and state["active"] == ["host setup in progress for 10 s"]
    state, action, _ = decide(state, _obs(1050.0, setups=[60.0]), CFG)  # stuck: 60 s old
    assert action == agent.IDLE and state["idle_since"] == 1000.0
    state, action, _ = decide(state, _obs(1060.0, setups=[70.0]), CFG)
    assert action == agent.POWEROFF


def test_setup_ages_finds_a_running_stage_by_its_script_name(tmp_path: Path) -> None:
    """A real process whose command line names a stage script, as the runner starts it."""
    from orchestrate.core.api.hoststeps import Facts, UserFacts
    from orchestrate.core.host.runner import stage_command

    # the runner names its stages so
    assert agent.SETUP_MARK in stage_command(Facts(user=UserFacts(privilege="root")))
    # A mark of this test's own, so stages other tests run meanwhile are not counted.
    mark = agent.SETUP_MARK + f"test-{os.getpid()}-"
    script = Path(mark + "stage")
    script.write_text("sleep 30\n", encoding="utf-8")
    proc = subprocess.Popen(["bash", str(script)])
    try:
        # Until the child has exec'd bash, its command line is still this Python's: wait for
        # the exec (bounded), not for a time.
        deadline = time.monotonic() + 10
        found = agent.setup_ages(mark=mark)
        while not found and time.monotonic() < deadline:
            time.sleep(0.01)
            found = agent.setup_ages(mark=mark)
        assert len(found) == 1 and 0.0 <= found[0] < 30.0, found
    finally:
        proc.kill()
        proc.wait()
        script.unlink()
    assert agent.setup_ages(mark=mark) == []


def test_parse_time_reads_jupyter_timestamps() -> None:
    assert agent.parse_time("1970-01-01T00:01:00Z") == 60.0
    assert agent.parse_time("1970-01-01T00:01:00.500000Z") == 60.5
    assert agent.parse_time("1970-01-01T01:01:00+01:00") == 60.0
    assert agent.parse_time("1970-01-01T00:01:00.25+00:00") == 60.25
    assert agent.parse_time("yesterday") is None


def test_read_kernels_keeps_busy_and_activity() -> None:
    kernels = [
        {"id": "aaaaaaaa-1", "name": "python3", "execution_state": "busy",
         "last_activity": "1970-01-01T00:16:40Z"},
        {"id": "bbbbbbbb-2", "name": "python3", "execution_state": "idle",
         "last_activity": "1970-01-01T00:10:00Z"},
    ]  # fmt: skip
    terminals = [{"name": "1", "last_activity": "1970-01-01T00:16:00Z"}]
    view = agent.read_kernels(kernels, terminals, now=1000.0)
    assert view.kernels == 2 and view.busy == ["kernel aaaaaaaa (python3)"]
    assert view.recent(1000.0, 60.0) == [("kernel aaaaaaaa (python3)", 0.0), ("terminal 1", 40.0)]
    assert agent.read_kernels({"message": "no"}, [], 0.0).error
    # a kernel nobody ever talked to stays "starting" in Jupyter's API: not busy
    never_used = [
        {"id": "c", "execution_state": "starting", "last_activity": "1970-01-01T00:00:00Z"}
    ]
    view = agent.read_kernels(never_used, [], now=1000.0)
    assert view.busy == [] and view.recent(1000.0, 60.0) == []


def test_human_durations() -> None:
    assert [agent.human(s) for s in (3, 90, 3600, 5400, 4 * 3600)] == [
        "3 s", "90 s", "60 min", "90 min", "4 h",
    ]  # fmt: skip


def test_connections_to_sees_both_ends_of_a_real_loopback_connection() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert agent.connections_to(port) == []
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            with accepted:
                found = agent.connections_to(port)
                client_port = client.getsockname()[1]
        assert sorted(found) == sorted(
            [
                f"127.0.0.1:{port} -> 127.0.0.1:{client_port}",
                f"127.0.0.1:{client_port} -> 127.0.0.1:{port}",
            ]
        )
    # a connection that is closed is not established any more
    assert agent.connections_to(port) == []


def test_connections_to_reads_ipv6_too() -> None:
    if not socket.has_ipv6 or not Path("/proc/net/tcp6").exists():
        pytest.fail("this machine has no IPv6 loopback to test /proc/net/tcp6 with")
    with socket.socket(socket.AF_INET6) as server:
        server.bind(("::1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("::1", port)):
            found = agent.connections_to(port)
    assert len(found) == 2 and all("[::1]" in c for c in found)


def _utmp_entry(kind: int, pid: int, line: str, user: str, host: str) -> bytes:
    return agent._UTMP.pack(
        kind, pid, line.encode(), b"ts/0", user.encode(), host.encode(),
        0, 0, 0, 0, 0, 0, 0, 0, 0, b"",
    )  # fmt: skip


def test_utmp_logins_need_a_live_process(tmp_path: Path) -> None:
    path = tmp_path / "utmp"
    path.write_bytes(
        _utmp_entry(7, os.getpid(), "pts/3", "alice", "10.1.2.3")
        + _utmp_entry(7, 2**22 + 12345, "pts/4", "ghost", "10.9.9.9")  # no such process
        + _utmp_entry(8, os.getpid(), "pts/5", "bob", "")  # DEAD_PROCESS: logged out
    )
    assert agent.utmp_logins(str(path)) == ["alice on pts/3 from 10.1.2.3"]
    assert agent._UTMP.size == 384


def test_logind_sessions_with_a_terminal_are_logins(tmp_path: Path) -> None:
    (tmp_path / "1").write_text("USER=alice\nSTATE=active\nTTY=/dev/pts/0\nREMOTE_HOST=10.0.0.1\n")
    (tmp_path / "2").write_text("USER=tunnel\nSTATE=active\nSERVICE=sshd\n")  # no terminal
    assert agent.logind_logins(str(tmp_path)) == ["alice on /dev/pts/0 from 10.0.0.1"]


# -- the agent for real on the bed host --------------------------------------------------


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    folder: Path
    marker: Path
    started: float

    def state(self) -> dict[str, Any]:
        return agent.read_json(str(self.folder / "state" / agent.STATE_FILE))

    def log(self) -> str:
        path = self.folder / "autostop.log"
        return path.read_text() if path.exists() else ""

    def last_stop(self) -> dict[str, Any]:
        return agent.read_json(str(self.folder / "state" / agent.LAST_STOP_FILE))

    def powered_off(self) -> bool:
        return self.marker.exists()

    def reset(self) -> None:
        self.marker.unlink(missing_ok=True)


@contextmanager
def running_agent(
    tmp_path: Path, *, port: int, token: str, window: float
) -> Iterator[RunningAgent]:
    """``python3 autostop.py --loop`` with a config file like the step writes, and the
    power-off command replaced by a marker file. Stopped (by its PID) at the end."""
    folder = tmp_path / "autostop"
    folder.mkdir()
    marker = folder / "POWERED-OFF"
    config = {
        "idle_seconds": window,
        "port": port,
        "jupyter_url": f"http://127.0.0.1:{port}",
        "token": token,
        "poweroff_command": f"touch {marker}",
        "state_dir": str(folder / "state"),
        "log_file": str(folder / "autostop.log"),
        "interval": INTERVAL,
        "console": False,
    }
    config_path = folder / "autostop.json"
    config_path.write_text(json.dumps(config))
    config_path.chmod(0o600)
    python = shutil.which("python3") or "/usr/bin/python3"
    process = subprocess.Popen(
        [python, str(AGENT), "--config", str(config_path), "--loop"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield RunningAgent(process, folder, marker, time.monotonic())
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until `predicate()` held; fails after `timeout`."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
    return time.monotonic() - began


def hold_for(predicate: Callable[[], bool], seconds: float) -> None:
    """Assert `predicate()` stays false for `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not predicate(), "happened although it should not have"
        time.sleep(0.05)


class Jupyter:
    """The bed's real Jupyter, with the REST calls the tests need."""

    def __init__(self, container: NotebookContainer) -> None:
        self.container = container

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.container.port}/api/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.container.token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
        return json.loads(text) if text else None

    def kernels(self) -> list[dict[str, Any]]:
        result = self.api("GET", "kernels")
        assert isinstance(result, list)
        return result

    def start_kernel(self) -> str:
        """A new kernel's id. Jupyter reports it "starting" until a client talks to it."""
        kernel = self.api("POST", "kernels", {"name": "python3"})
        return str(kernel["id"])

    def kernel(self, kernel_id: str) -> dict[str, Any]:
        result = self.api("GET", f"kernels/{kernel_id}")
        assert isinstance(result, dict)
        return result

    def delete_all_kernels(self) -> None:
        for kernel in self.kernels():
            self.api("DELETE", f"kernels/{kernel['id']}")

    def execute(self, kernel_id: str, code: str) -> None:
        """Send `code` to the kernel from inside the container (jupyter_client over ZMQ) and
        return once the kernel reports busy (or, for quick code, has run it)."""
        # As the user Jupyter runs as (the image's start script drops root), so the kernel's
        # connection file is found in that user's runtime folder.
        docker(
            "exec", "-u", "jovyan", self.container.container_id,
            "python3", "-c", _EXECUTE, kernel_id, code,
            timeout=90,
        )  # fmt: skip


_EXECUTE = r"""
import os, queue, sys, time
from jupyter_client import BlockingKernelClient
from jupyter_core.paths import jupyter_runtime_dir
kernel_id, code = sys.argv[1], sys.argv[2]
connection_file = os.path.join(jupyter_runtime_dir(), f"kernel-{kernel_id}.json")
deadline = time.monotonic() + 60
while not os.path.exists(connection_file):  # Jupyter writes it as the kernel starts
    assert time.monotonic() < deadline, "no connection file"
    time.sleep(0.1)
client = BlockingKernelClient(connection_file=connection_file)
client.load_connection_file()
client.start_channels()
# kernel_info until the kernel answers on iopub too: then the iopub subscription is live
# (ZMQ drops what a subscriber publishes before it is connected)
while True:
    assert time.monotonic() < deadline, "the kernel never answered kernel_info"
    info_id = client.kernel_info()
    try:
        while True:
            msg = client.get_iopub_msg(timeout=2)
            if msg["parent_header"].get("msg_id") == info_id:
                break
        break
    except queue.Empty:
        continue
msg_id = client.execute(code)
while True:
    msg = client.get_iopub_msg(timeout=30)
    if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status":
        break
client.stop_channels()
"""


@pytest.fixture(scope="module")
def jupyter(jupyter_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jupyter]:
    token = secrets.token_hex(16)
    folder = tmp_path_factory.mktemp("autostop-notebooks")
    with run_notebook(jupyter_image, token=token, host_dir=folder) as container:
        container.wait_ready(timeout=90)
        yield Jupyter(container)


@pytest.fixture
def fresh_jupyter(jupyter: Jupyter) -> Jupyter:
    jupyter.delete_all_kernels()
    return jupyter


WINDOW = 2.0
#: A check lands at most one interval after the window ends; the rest is scheduling slack.
LATE = INTERVAL + 1.5


def _idle_a_window_after(last_stop: dict[str, Any], active: dict[str, Any]) -> None:
    """The power-off came a whole window (by the agent's own clock) after activity the agent
    saw no earlier than the check that recorded ``active`` (a state read while in use)."""
    assert active["state"] == agent.ACTIVE
    idle_from = last_stop["ts"] - last_stop["idle_seconds"]
    assert idle_from >= active["last_check"], (last_stop, active)
    assert last_stop["idle_seconds"] >= last_stop["window_seconds"], last_stop


@pytest.mark.bed
def test_no_connection_no_kernel_powers_off_after_the_window(
    fresh_jupyter: Jupyter, tmp_path: Path
) -> None:
    c = fresh_jupyter.container
    with running_agent(tmp_path, port=c.port, token=c.token, window=WINDOW) as run:
        wait_for(run.powered_off, WINDOW + LATE + 5)
        last = run.last_stop()
        # a whole window idle by the agent's own clock (that the first check past the window
        # powers off is `decide`'s, tested above on exact times)
        assert last["window_seconds"] == WINDOW and last["idle_seconds"] >= WINDOW, last
        assert last["message"] == "stopped by autostop after 2 s idle"
        assert last["reason"] == (
            f"no connection to port {c.port}; 0 kernel(s), none busy or active in the last "
            "2 s; nobody logged in"
        )
        assert "powering off" in run.log()
        state = run.state()
        assert state["jupyter_reachable"] is True and state["jupyter_error"] is None


@pytest.mark.bed
def test_open_browser_connection_through_the_tunnel_keeps_the_host_up(
    fresh_jupyter: Jupyter, ssh_host: SshHost, tmp_path: Path
) -> None:
    import paramiko

    c = fresh_jupyter.container
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the bed's own sshd
    client.connect(
        ssh_host.address, port=ssh_host.port, username=ssh_host.user,
        key_filename=str(ssh_host.key_path), allow_agent=False, look_for_keys=False,
    )  # fmt: skip
    try:
        transport = client.get_transport()
        assert transport is not None
        # What the tunnel does for each browser connection: sshd connects to the port.
        channel = transport.open_channel("direct-tcpip", ("127.0.0.1", c.port), ("127.0.0.1", 0))
        request = (
            f"GET /api/status?token={c.token} HTTP/1.1\r\nHost: localhost\r\n"
            "Connection: keep-alive\r\n\r\n"
        )
        channel.sendall(request.encode())
        assert channel.recv(4096).startswith(b"HTTP/1.1 200")
        with running_agent(tmp_path, port=c.port, token=c.token, window=WINDOW) as run:
            hold_for(run.powered_off, 2 * WINDOW + LATE)
            state = run.state()
            assert state["state"] == agent.ACTIVE
            assert "connection(s) to the notebook" in state["active"][0]
            # the browser tab closes; the SSH tunnel itself stays open and is no login
            channel.close()
            wait_for(run.powered_off, WINDOW + LATE + 5)
            _idle_a_window_after(run.last_stop(), state)
            assert transport.is_active()
    finally:
        client.close()


@pytest.mark.bed
def test_busy_kernel_keeps_the_host_up(fresh_jupyter: Jupyter, tmp_path: Path) -> None:
    c = fresh_jupyter.container
    kernel_id = fresh_jupyter.start_kernel()
    try:
        # The server learns a kernel's state from iopub status messages; until its own
        # subscription is live it keeps saying "starting". A first, quick execution proves
        # the server hears the kernel (its state leaves "starting") before the long one.
        for _ in range(20):
            fresh_jupyter.execute(kernel_id, "1 + 1")
            if fresh_jupyter.kernel(kernel_id)["execution_state"] != "starting":
                break
            time.sleep(0.5)
        fresh_jupyter.execute(kernel_id, "import time; time.sleep(60)")
        wait_for(lambda: fresh_jupyter.kernel(kernel_id)["execution_state"] == "busy", 30)
        with running_agent(tmp_path, port=c.port, token=c.token, window=WINDOW) as run:
            hold_for(run.powered_off, 2 * WINDOW + LATE)
            state = run.state()
            assert state["state"] == agent.ACTIVE and state["connections"] == 0
            assert any(r.startswith("kernel busy: kernel ") for r in state["active"])
            # the computation ends: the window counts from the kernel's last activity
            fresh_jupyter.api("POST", f"kernels/{kernel_id}/interrupt")
            wait_for(lambda: fresh_jupyter.kernel(kernel_id)["execution_state"] == "idle", 30)
            wait_for(run.powered_off, WINDOW + LATE + 5)
            _idle_a_window_after(run.last_stop(), state)
    finally:
        fresh_jupyter.api("DELETE", f"kernels/{kernel_id}")


@pytest.mark.bed
def test_kernel_idle_past_the_window_with_no_connection_powers_off(
    fresh_jupyter: Jupyter, tmp_path: Path
) -> None:
    c = fresh_jupyter.container
    kernel_id = fresh_jupyter.start_kernel()
    try:
        window = 3.0
        fresh_jupyter.execute(kernel_id, "1 + 1")
        with running_agent(tmp_path, port=c.port, token=c.token, window=window) as run:
            wait_for(lambda: bool(run.state()), 10)
            first = run.state()
            assert first["kernels"] == 1
            assert any(" active " in r for r in first["active"]), first
            wait_for(run.powered_off, window + LATE + 5)
            # powered off a window after the kernel's last activity, not a window after the
            # agent stopped seeing it as recent: the idle time counts from the same moment
            # the first check counted from
            last = run.last_stop()
            assert last["ts"] - last["idle_seconds"] == pytest.approx(first["last_active"])
            assert last["idle_seconds"] >= window
            assert "1 kernel(s), none busy" in run.last_stop()["reason"]
    finally:
        fresh_jupyter.api("DELETE", f"kernels/{kernel_id}")


@pytest.mark.bed
def test_ssh_login_keeps_the_host_up(ssh_host: SshHost, tmp_path: Path) -> None:
    """An interactive SSH session (a terminal) is a login in utmp; sshd writes it only if
    the file exists, which on this machine (a container without systemd's boot-time
    systemd-update-utmp) it may not: the test creates it then and removes it after."""
    import paramiko

    utmp = Path(agent.DEFAULT_UTMP)
    created = not utmp.exists()
    if created:
        utmp.touch(mode=0o664)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # the bed's own sshd
    try:
        client.connect(
            ssh_host.address, port=ssh_host.port, username=ssh_host.user,
            key_filename=str(ssh_host.key_path), allow_agent=False, look_for_keys=False,
        )  # fmt: skip
        shell = client.invoke_shell()  # a pty: an interactive login
        wait_for(lambda: any(ssh_host.user in x for x in agent.utmp_logins(str(utmp))), 10)
        unused_port = _free_port()
        with running_agent(tmp_path, port=unused_port, token="t", window=WINDOW) as run:
            hold_for(run.powered_off, 2 * WINDOW + LATE)
            logins = run.state()["logins"]
            assert any(x.startswith(f"{ssh_host.user} on pts/") for x in logins), logins
            shell.close()
            client.close()
            wait_for(lambda: not agent.utmp_logins(str(utmp)), 10)
            wait_for(run.powered_off, WINDOW + LATE + 5)
    finally:
        client.close()
        if created:
            utmp.unlink(missing_ok=True)


@pytest.mark.bed
def test_once_mode_and_rearm(tmp_path: Path) -> None:
    """The timer's mode: one check per run, the state file carrying the idle time between
    runs; ``--rearm`` (launch/start) starts it over."""
    folder = tmp_path / "once"
    marker = folder / "POWERED-OFF"
    config = folder / "autostop.json"
    folder.mkdir()
    config.write_text(
        json.dumps({
            "idle_seconds": 1.0, "port": _free_port(), "token": "", "interval": 60,
            "poweroff_command": f"touch {marker}", "state_dir": str(folder),
            "log_file": str(folder / "log"), "console": False,
        })
    )  # fmt: skip

    def once(*flags: str) -> None:
        subprocess.run(
            ["python3", str(AGENT), "--config", str(config), *flags], check=True, timeout=30
        )

    once("--rearm")
    once("--once")
    assert not marker.exists()
    time.sleep(1.1)
    once("--rearm")  # launch/start came: the idle time starts over
    once("--once")
    assert not marker.exists()
    time.sleep(1.1)
    once("--once")
    assert marker.exists()
    out = subprocess.run(
        ["python3", str(AGENT), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == agent.AGENT_VERSION


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
