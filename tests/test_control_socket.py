"""The control socket: one process lends its pinned SSH connection to the others.

Real sshd (the bed's), real paramiko Session, real Unix socket. What is checked: commands
run through it with their output, stdin and exit status; the socket is 0600 and another
user cannot connect; a client uses it only for the host and host key it expects; a stale
socket costs one local connect and no SSH; and a shared session that must reconnect (a
reboot) makes its own direct, pinned connection.
"""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api.errors import HostError
from orchestrate.core.ssh import control
from orchestrate.core.ssh.control import ControlServer, SharedSession, open_shared
from orchestrate.core.ssh.session import Session

from tests.bed.fixtures_host import SshHost

pytestmark = [pytest.mark.bed]


def _accepted(ssh_host: SshHost) -> int:
    """Logins sshd accepted so far: a shared command must add none."""
    return ssh_host.sshd.log().count("Accepted publickey")


def _expected(ssh_host: SshHost) -> dict[str, Any]:
    return {
        "address": ssh_host.address,
        "port": ssh_host.port,
        "user": ssh_host.user,
        "host_key": ssh_host.host_key,
    }


@pytest.fixture
def served(ssh_host: SshHost, tmp_path: Path) -> Iterator[tuple[Session, ControlServer]]:
    session = Session.connect(
        ssh_host.address,
        ssh_host.port,
        ssh_host.user,
        ssh_host.key_path,
        pinned_host_key=ssh_host.host_key,
        deadline_s=30,
    )
    hello = {**_expected(ssh_host), "host_key": session.host_key, "local_port": 1, "remote_port": 2}
    server = ControlServer(session, tmp_path / "nb.sock", hello)
    try:
        yield session, server
    finally:
        server.close()
        session.close()


def _client(ssh_host: SshHost, server: ControlServer) -> SharedSession:
    shared = open_shared(server.path, _expected(ssh_host), ssh_host.key_path, "nb")
    assert shared is not None
    return shared


def test_commands_run_on_the_lent_connection(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    _, server = served
    before = _accepted(ssh_host)
    shared = _client(ssh_host, server)
    lines: list[tuple[str, str]] = []
    result = shared.run(
        "cat; echo oops >&2; echo two; exit 3",
        stdin="one\n",
        on_line=lambda line, stream: lines.append((line, stream)),
    )
    assert result.rc == 3
    assert result.stdout == "one\ntwo\n"
    assert result.stderr == "oops\n"
    assert ("two", "stdout") in lines and ("oops", "stderr") in lines
    assert shared.active
    assert shared.hello["local_port"] == 1 and shared.hello["remote_port"] == 2
    assert _accepted(ssh_host) == before, "a shared command must not log in again"


def test_done_when_ends_the_read_early(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    shared = _client(ssh_host, served[1])
    result = shared.run("echo ready; sleep 30", done_when=lambda out: "ready" in out, timeout=60)
    assert result.rc == 0 and result.stdout == "ready\n"


def test_the_socket_is_the_users_alone(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    assert stat.S_IMODE(served[1].path.stat().st_mode) == 0o600
    # pytest's folders are 0700 already; serve from one anybody may enter, so that only the
    # socket's own mode stands between another user and the connection.
    open_dir = Path(tempfile.mkdtemp(prefix="orch-ctl-"))
    try:
        open_dir.chmod(0o755)
        server = ControlServer(served[0], open_dir / "nb.sock", {})
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('refused')\n"
            "else:\n    print('connected')\n"
        )
        out = subprocess.run(
            ["/usr/bin/python3", "-c", probe, str(server.path)],
            user=65534,  # nobody
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )
        server.close()
        assert out.stdout.strip() == "refused"
    finally:
        shutil.rmtree(open_dir, ignore_errors=True)


def test_another_host_key_is_not_used(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    path = served[1].path
    other = {**_expected(ssh_host), "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther"}
    assert open_shared(path, other, ssh_host.key_path, "nb") is None
    moved = {**_expected(ssh_host), "address": "127.0.0.2"}
    assert open_shared(path, moved, ssh_host.key_path, "nb") is None


def test_a_stale_socket_costs_one_local_connect(
    ssh_host: SshHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dead.sock"
    left = socket.socket(socket.AF_UNIX)
    left.bind(str(path))  # what a killed tunnel leaves: a socket file nobody listens on
    left.close()
    connects: list[object] = []

    class Counting(socket.socket):
        def connect(self, address: Any) -> None:
            connects.append(address)
            super().connect(address)

    # Counting is the only stand-in here: the socket calls themselves are real.
    monkeypatch.setattr(control.socket, "socket", Counting)
    before = _accepted(ssh_host)
    assert open_shared(path, _expected(ssh_host), ssh_host.key_path, "nb") is None
    assert open_shared(tmp_path / "never.sock", _expected(ssh_host), ssh_host.key_path, "x") is None
    assert connects == [str(path), str(tmp_path / "never.sock")]
    assert _accepted(ssh_host) == before


def test_a_server_whose_connection_dropped_is_not_used(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    """The tunnel process lives on after its host went away (powered off by autostop): its
    socket still answers, but a client must connect directly, not be lent a dead
    transport (a `start` would fail on it)."""
    session, server = served
    assert _client(ssh_host, server).active
    session.close()  # what the host's power-off does to the tunnel's connection
    assert open_shared(server.path, _expected(ssh_host), ssh_host.key_path, "nb") is None


def test_a_dead_server_is_a_host_error_then_reconnect_goes_direct(
    ssh_host: SshHost, served: tuple[Session, ControlServer]
) -> None:
    session, server = served
    shared = _client(ssh_host, server)
    server.close()
    assert not shared.active
    with pytest.raises(HostError, match=r"connection .* is gone"):
        shared.run("true")
    before = _accepted(ssh_host)
    shared.reconnect(deadline_s=30)
    assert shared.active
    assert shared.run("echo direct").stdout == "direct\n"
    assert _accepted(ssh_host) == before + 1
    assert shared.direct.host_key == session.host_key
    shared.close()
