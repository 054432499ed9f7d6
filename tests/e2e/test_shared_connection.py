"""Commands that find the detached tunnel alive use its SSH connection, not a new one.

The whole CLI on the bed: the existing-host provider, the bed's real sshd and Docker, the
real Jupyter image. sshd's own log proves which commands logged in: a command served over
the tunnel's control socket adds no "Accepted publickey" line.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from orchestrate.core.flows.background import control_path, is_our_tunnel
from orchestrate.core.store.paths import state_db
from orchestrate.core.store.state import InstanceRow, State

from tests.bed.docker_engine import docker
from tests.support.e2e import Bed, adopt_bed_key, make_bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]

URL = re.compile(r"^http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)$", re.M)


@pytest.fixture
def bed(orch_home: Path, ssh_host, docker_engine, jupyter_image) -> Iterator[Bed]:  # type: ignore[no-untyped-def]
    adopt_bed_key(orch_home, ssh_host.key_path)
    made = make_bed(orch_home, Path.cwd(), None, ssh_host, jupyter_image)
    (made.work / "orchestrate.toml").write_text(
        f"""
[profiles.box]
provider = "ssh"
image = "{made.image}"
port = {made.local_port}
remote_port = {made.remote_port}
container_name = "{made.container}"
autostop = "off"

[profiles.box.ssh]
host = "{ssh_host.user}@{ssh_host.address}:{ssh_host.port}"
""",
        encoding="utf-8",
    )
    yield made
    made.cli("down", "nb", "--yes", check=False)
    docker("rm", "-f", made.container, check=False)


def logins(bed: Bed) -> int:
    return str(bed.ssh.sshd.log()).count("Accepted publickey")


def row(name: str = "nb") -> InstanceRow:
    with State(state_db()) as state:
        found = state.get(name)
    assert found is not None
    return found


def test_live_tunnel_serves_launch_status_and_logs(bed: Bed) -> None:
    first = bed.cli("launch", "nb", "--profile", "box", "--detach", "--no-browser")
    url = URL.search(first.stdout)
    assert url, first.stdout + first.stderr
    pid = row().tunnel_pid
    assert is_our_tunnel(pid, "nb")
    assert control_path("nb").is_socket()

    before = logins(bed)
    again = bed.cli("launch", "nb", "--profile", "box", "--detach", "--no-browser")
    assert "0 steps applied" in again.stderr
    assert URL.search(again.stdout) and URL.search(again.stdout).group(0) == url.group(0)  # type: ignore[union-attr]
    assert row().tunnel_pid == pid, "the live tunnel serving the same notebook is kept"

    foreground = bed.cli("launch", "nb", "--profile", "box", "--no-browser")
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
    bed.cli("launch", "nb", "--profile", "box", "--detach", "--no-browser")
    assert control_path("nb").is_socket()
    bed.cli("tunnel", "nb", "--close")
    assert not control_path("nb").exists()
