"""A changed host key: every command that would reach the host refuses before anything runs.

After a launch pinned the bed's host key, the instance's SSH port is pointed at a second,
real sshd with a fresh host key (what a user meets when the address now belongs to another
machine, or the VM was rebuilt). That sshd trusts orchestrate's key, so a client that did
not check the host key would log in: its log proves nobody did. Then `forget-host-key`,
the way the message gives to accept a legitimate new key, lets the next command pin it.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bed.sshd import Sshd, start_sshd
from tests.reliability.support import launch_args, tunnel_processes
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


@pytest.fixture
def impostor(ssh_host) -> Iterator[Sshd]:
    """A second sshd: same login user and authorised key as the bed's, another host key."""
    workdir = Path(tempfile.mkdtemp(prefix="orch-impostor-sshd-"))
    workdir.chmod(0o755)
    public = Path(str(ssh_host.key_path) + ".pub").read_text(encoding="utf-8")
    try:
        with start_sshd(workdir, user=ssh_host.user, authorized_key=public) as sshd:
            yield sshd
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _pin(bed: Bed) -> tuple[str, int]:
    db = sqlite3.connect(bed.home / "state" / "state.db")
    try:
        host_key, port = db.execute(
            "SELECT host_key, ssh_port FROM instances WHERE name = 'nb'"
        ).fetchone()
    finally:
        db.close()
    return host_key, port


def _point_at(bed: Bed, port: int) -> None:
    db = sqlite3.connect(bed.home / "state" / "state.db")
    try:
        db.execute("UPDATE instances SET ssh_port = ? WHERE name = 'nb'", (port,))
        db.commit()
    finally:
        db.close()


#: Every command that reaches the host over SSH.
COMMANDS = [
    launch_args(),
    ["start", "nb", "--detach", "--no-browser"],
    ["logs", "nb"],
    ["tunnel", "nb"],
    ["tunnel", "nb", "--detach"],
    ["ssh", "nb", "--", "touch", "/tmp/orch-impostor-was-reached"],
    ["down", "nb", "--yes", "--sync-notebooks", "synced"],
]


def test_changed_host_key_is_refused_by_every_command(bed: Bed, impostor: Sshd) -> None:
    bed.cli(*launch_args())
    bed.cli("tunnel", "nb", "--close")
    pinned, _ = _pin(bed)
    assert pinned == bed.ssh.host_key
    assert bed.cli("ssh", "nb", "--", "echo", "reached").stdout.strip() == "reached"
    assert impostor.host_key_pub != pinned
    _point_at(bed, impostor.port)

    for args in COMMANDS:
        result = bed.cli(*args, check=False, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0, (args, result.stderr)
        assert "host key" in lines[-1] and "changed" in lines[-1], (args, result.stderr)
        assert "orchestrate forget-host-key nb" in lines[-1], (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert "Accepted publickey" not in impostor.log(), args
        assert _pin(bed)[0] == pinned, "the pin must not move on its own"
    assert tunnel_processes(bed) == []
    assert not Path("synced").exists()
    assert list(bed.gce.instances) == ["nb"]

    # The way the message gives: forget the pin; the next contact pins the key it meets.
    bed.cli("forget-host-key", "nb")
    bed.cli("logs", "nb")
    assert _pin(bed)[0] == impostor.host_key_pub
    assert "Accepted publickey" in impostor.log()
