"""Proof that the test bed's "VM" is real: sshd, sudo, Docker engine and the Jupyter image.

Nothing here is mocked.  If these pass, the product's end-to-end tests talk to
a real OpenSSH server as a cloud-style user, run real containers through
``sudo docker``, and reach a real Jupyter through a port published on
127.0.0.1 only.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from tests.bed.docker_engine import DockerEngine, docker, read_ip_forward
from tests.bed.fixtures_host import SshHost
from tests.bed.jupyter_image import START_PATH, notebook_command, run_notebook
from tests.bed.sshd import SshdError, ensure_login_user, generate_client_key, start_sshd

pytestmark = pytest.mark.bed

EMPTY_NOTEBOOK = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _connect(host: SshHost) -> paramiko.SSHClient:
    """Connect like the product does: own socket with TCP_NODELAY, host key pinned up front."""
    client = paramiko.SSHClient()
    pinned = paramiko.Ed25519Key(data=base64.b64decode(host.host_key.split()[1]))
    client.get_host_keys().add(f"[{host.address}]:{host.port}", "ssh-ed25519", pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    sock = socket.create_connection((host.address, host.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.connect(
        host.address,
        port=host.port,
        username=host.user,
        key_filename=str(host.key_path),
        sock=sock,
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def _exec(client: paramiko.SSHClient, command: str) -> tuple[int, str, str]:
    """Run a command over the connection; return (exit status, stdout, stderr)."""
    _, stdout, stderr = client.exec_command(command, timeout=60)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


@pytest.fixture
def ssh_client(ssh_host: SshHost) -> Iterator[paramiko.SSHClient]:
    client = _connect(ssh_host)
    try:
        yield client
    finally:
        client.close()


def test_ssh_reaches_this_machine_with_pinned_host_key(
    ssh_host: SshHost, ssh_client: paramiko.SSHClient
) -> None:
    transport = ssh_client.get_transport()
    assert transport is not None
    presented = transport.get_remote_server_key()
    assert f"{presented.get_name()} {presented.get_base64()}" == ssh_host.host_key
    assert ssh_host.host_key.startswith("ssh-ed25519 AAAA")

    status, out, err = _exec(ssh_client, "uname -n; id -un")
    assert status == 0, err
    assert out.split() == [os.uname().nodename, ssh_host.user]
    assert ssh_host.user != "root"
    assert ssh_host.key_path.stat().st_mode & 0o777 == 0o600


def test_login_user_has_passwordless_sudo(ssh_client: paramiko.SSHClient) -> None:
    status, out, err = _exec(ssh_client, "sudo -n true && sudo -n id -u")
    assert status == 0, err
    assert out.strip() == "0"


def test_login_user_runs_docker_through_sudo(
    ssh_client: paramiko.SSHClient, docker_engine: DockerEngine
) -> None:
    status, out, err = _exec(ssh_client, "sudo -n docker info --format '{{.ServerVersion}}'")
    assert status == 0, err
    assert out.strip() == docker_engine.version


def test_wrong_client_key_is_refused(ssh_host: SshHost, tmp_path: Path) -> None:
    other_key, _ = generate_client_key(tmp_path, "intruder")
    intruder = SshHost(
        address=ssh_host.address,
        port=ssh_host.port,
        user=ssh_host.user,
        key_path=other_key,
        host_key=ssh_host.host_key,
        sshd=ssh_host.sshd,
    )
    with pytest.raises(paramiko.AuthenticationException):
        _connect(intruder).close()


def test_start_sshd_explains_unreadable_authorized_keys(tmp_path: Path) -> None:
    # pytest's tmp_path is 0700 root: sshd, reading as the login user, could not
    # see the keys; start_sshd must say so instead of starting a useless server.
    user = ensure_login_user()
    _, public = generate_client_key(tmp_path / "client")
    with pytest.raises(SshdError, match="not readable"):
        start_sshd(tmp_path / "sshd", user=user, authorized_key=public)


def test_sshd_stop_ends_its_process_and_port() -> None:
    user = ensure_login_user()
    workdir = Path(tempfile.mkdtemp(prefix="orchestrate-bed-sshd-"))
    workdir.chmod(0o755)
    try:
        _, public = generate_client_key(workdir / "client")
        server = start_sshd(workdir / "sshd", user=user, authorized_key=public)
        assert server.banner.startswith("SSH-2.0-OpenSSH")
        assert Path(f"/proc/{server.pid}").exists()
        server.stop()
        assert not server.running
        assert not Path(f"/proc/{server.pid}").exists()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.address, server.port), timeout=5).close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_docker_engine_leaves_ip_forward_alone(docker_engine: DockerEngine) -> None:
    assert read_ip_forward() == docker_engine.ip_forward_before
    if docker_engine.managed:
        assert docker_engine.pid is not None
        assert Path(f"/proc/{docker_engine.pid}").exists()


def test_jupyter_serves_mounted_folder_with_token_on_loopback_only(
    jupyter_image: str, tmp_path: Path
) -> None:
    token = secrets.token_hex(24)
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    marker = f"bed-{secrets.token_hex(4)}.txt"
    (notebooks / marker).write_text("written on the host\n")

    with run_notebook(jupyter_image, token=token, host_dir=notebooks) as container:
        container.wait_ready()

        status, body = container.get("api/status")
        assert status == 200
        assert set(json.loads(body)) >= {"started", "last_activity", "kernels"}

        status, body = container.get("api/status", with_token=False)
        assert status == 403
        assert json.loads(body)["message"] == "Forbidden"
        assert container.get("api/status?token=wrong", with_token=False)[0] == 403

        status, body = container.get("api/contents")
        assert status == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert marker in names

        bindings = docker("port", container.container_id, "8888").stdout.split()
        assert bindings == [f"127.0.0.1:{container.port}"]
        # The token was given on the command line and must not be printed in clear.
        assert token not in container.logs()

    gone = docker("ps", "-a", "-q", "--no-trunc", "--filter", f"id={container.container_id}")
    assert gone.stdout.strip() == ""


def test_image_default_command_takes_token_from_environment(
    jupyter_image: str, tmp_path: Path
) -> None:
    token = secrets.token_hex(24)
    with run_notebook(jupyter_image, token=token, host_dir=tmp_path, token_via_env=True) as nb:
        nb.wait_ready()
        assert nb.get("api/status")[0] == 200
        assert nb.get("api/status?token=wrong", with_token=False)[0] == 403
        config = json.loads(docker("image", "inspect", jupyter_image).stdout)[0]["Config"]
        assert config["Cmd"] == [START_PATH] == notebook_command("x")[:1]
        assert config["WorkingDir"] == "/notebooks"


def test_image_runs_as_nb_uid_in_the_notebook_args_root_dir(
    jupyter_image: str, tmp_path: Path
) -> None:
    """What the product's notebook step relies on, as the Docker Stacks images do it:
    started as root with NB_UID/NB_GID, Jupyter runs as that uid, so a notebook saved
    through it belongs on the host to the user with that uid; NOTEBOOK_ARGS sets the root."""
    token = secrets.token_hex(24)
    user = pwd.getpwnam(ensure_login_user())
    host_dir = tmp_path / "notebooks"  # pytest's tmp_path is root's, 0700: not the user's
    (host_dir / "work").mkdir(parents=True)
    for folder in (host_dir, host_dir / "work"):
        os.chown(folder, user.pw_uid, user.pw_gid)
    env = {
        "JUPYTER_TOKEN": token,
        "NB_UID": str(user.pw_uid),
        "NB_GID": str(user.pw_gid),
        "NOTEBOOK_ARGS": "--ServerApp.root_dir=/notebooks/work",
    }
    with run_notebook(jupyter_image, token=token, host_dir=host_dir, env=env) as nb:
        nb.wait_ready()
        request = urllib.request.Request(
            nb.url("api/contents/saved.ipynb"),
            data=json.dumps({"type": "notebook", "content": EMPTY_NOTEBOOK}).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 201
        # The start script execs Jupyter, so it is the container's first process.
        runs_as = docker("exec", nb.container_id, "stat", "-c", "%u", "/proc/1").stdout
    saved = host_dir / "work" / "saved.ipynb"
    assert saved.is_file()
    assert (saved.stat().st_uid, saved.stat().st_gid) == (user.pw_uid, user.pw_gid)
    assert runs_as.strip() == str(user.pw_uid)


def test_sshd_runs_inside_a_network_namespace() -> None:
    # The WAN tests put the "VM" in a namespace of their own; sshd must start
    # there and its readiness check must look from inside that namespace.
    user = ensure_login_user()
    netns = f"obed-{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix="orchestrate-bed-sshd-"))
    workdir.chmod(0o755)
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        _, public = generate_client_key(workdir / "client")
        with start_sshd(workdir / "sshd", user=user, authorized_key=public, netns=netns) as server:
            assert server.port == 22
            assert server.banner.startswith("SSH-2.0-OpenSSH")
            ns_of_sshd = os.readlink(f"/proc/{server.pid}/ns/net")
            assert ns_of_sshd != os.readlink("/proc/self/ns/net")
        assert not server.running
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def test_recipe_changes_change_the_tag_and_the_tarball_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache is keyed by these hashes: a changed recipe must never reuse an
    # old tarball or image, and a changed image config must not re-debootstrap.
    from tests.bed import jupyter_image as recipe

    tag, rootfs = recipe.image_tag(), recipe.rootfs_hash()
    monkeypatch.setattr(recipe, "NOTEBOOK_DIR", "/work")
    assert recipe.image_tag() != tag
    assert recipe.rootfs_hash() == rootfs
    monkeypatch.setattr(recipe, "PACKAGES", (*recipe.PACKAGES, "python3-numpy"))
    assert recipe.rootfs_hash() != rootfs
    with_numpy = recipe.rootfs_hash()
    monkeypatch.setattr(recipe, "RECIPE_VERSION", recipe.RECIPE_VERSION + 1)
    assert recipe.rootfs_hash() != with_numpy
