"""Ray on a cluster node, set up by the real host steps on the bed host (sshd, dockerd, the
bed's notebook image with Ray).

A cluster of one node is not a thing the product makes, so these tests hand the runner a
`ClusterContext` whose head is this bed host (its own address; the traffic stays on the
machine) and check what a head must do: Ray
up with token authentication, a driver in the notebook container joining with a plain
``ray.init()``, a driver with another token refused, the dashboard on the host's
127.0.0.1 asking for the token, a second run applying nothing, and an image without Ray
stopping the step with one line. Workers joining over real links are the multi-node bed's
tests.
"""

from __future__ import annotations

import importlib
import json
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pluggy
import pytest
from orchestrate.core.api import hooks
from orchestrate.core.api.errors import StepFailed
from orchestrate.core.api.hoststeps import ClusterContext, StepContext, collect_steps
from orchestrate.core.host.runner import Runner
from orchestrate.core.ssh.session import Session
from orchestrate.core.wiring.registry import HOST_PLUGINS
from orchestrate.plugins.host.ray import layout
from orchestrate.plugins.host.ray.step import IMAGES_THAT_WORK

from tests.bed.docker_engine import docker
from tests.bed.sshd import free_port

pytestmark = [pytest.mark.bed, pytest.mark.slow]

NOTEBOOK = "orchestrate-bed-ray-notebook"
CLUSTER = "bedray"


def manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hooks.PROJECT)
    pm.add_hookspecs(hooks)
    for name in HOST_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.check_pending()
    return pm


def connect(host: Any) -> Session:
    return Session.connect(
        host.address, host.port, host.user, host.key_path, pinned_host_key=host.host_key,
        deadline_s=20,
    )  # fmt: skip


def run_steps(host: Any, context: StepContext, log: Path) -> Any:
    pm = manager()
    with connect(host) as session:
        return Runner(session, context, collect_steps(pm.hook, context), log_path=log).run()


def remove_containers() -> None:
    for name in (layout.HEAD_CONTAINER, NOTEBOOK):
        docker("rm", "-f", name, check=False)


@dataclass
class Head:
    context: StepContext
    token: str
    uid: int
    first: Any
    second: Any


def ray_status(timeout: float = 420) -> str:
    """``ray status`` on the head once Ray answers with an alive node. On two busy cores
    Ray's own 30 s start-up limit can pass (its dashboard agent is slow to import); the
    container's restart policy then starts it again, which is what this waits through."""
    began, out = time.monotonic(), ""
    while time.monotonic() - began < timeout:
        proc = docker("exec", layout.HEAD_CONTAINER, "ray", "status", check=False, timeout=60)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0 and "Active:" in out:
            return out
        time.sleep(2)
    logs = docker("logs", "--tail", "40", layout.HEAD_CONTAINER, check=False)
    raise AssertionError(f"Ray did not come up: {out[-2000:]}\n{logs.stdout}{logs.stderr}")


def global_address() -> str | None:
    """One of this host's non-loopback addresses (what the host network would expose)."""
    proc = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    )
    for line in proc.stdout.splitlines():
        words = line.split()
        if "inet" in words:
            return words[words.index("inet") + 1].split("/")[0]
    return None


@pytest.fixture(scope="module")
def head(ssh_host: Any, jupyter_image: str) -> Iterator[Head]:
    """Launch's host steps with this bed host as a cluster's head, run twice."""
    remove_containers()
    secret_dir = Path(tempfile.mkdtemp(prefix="orchestrate-bed-ray-"))
    notebooks = Path(tempfile.mkdtemp(prefix="orchestrate-bed-ray-nb-"))
    token = secrets.token_hex(32)
    token_file = secret_dir / "token"
    # As core writes it: root's, 0600, in a 0700 folder (with a newline at the end).
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    # The host's own address, as a VM's internal one: Ray takes 127.0.0.1 in RAY_ADDRESS for
    # "this node" and looks for a node with the host's address, so loopback would not do.
    address = global_address()
    assert address is not None, "the bed host has no address besides loopback"
    cluster = ClusterContext(
        name=CLUSTER, role="head", index=0, size=2, head_address=address,
        node_address=address, token_file=str(token_file),
    )  # fmt: skip
    uid = pwd.getpwnam(ssh_host.user).pw_uid
    shutil.chown(notebooks, ssh_host.user)
    context = StepContext(
        instance=CLUSTER, gpu=None, notebook_image=jupyter_image, token=secrets.token_hex(16),
        notebook_container=NOTEBOOK, notebooks_host_dir=str(notebooks),
        remote_port=free_port("127.0.0.1"), cluster=cluster,
    )  # fmt: skip
    try:
        first = run_steps(ssh_host, context, secret_dir / "first.log")
        ray_status()
        second = run_steps(ssh_host, context, secret_dir / "second.log")
        yield Head(context, token, uid, first, second)
    finally:
        remove_containers()
        shutil.rmtree(layout.host_dir(cluster), ignore_errors=True)
        shutil.rmtree(secret_dir, ignore_errors=True)
        shutil.rmtree(notebooks, ignore_errors=True)


def driver(uid: int, code: str, *env: str) -> tuple[int, str]:
    """Run ``python -c CODE`` in the notebook container as the kernel's user."""
    argv = ["exec", "-u", str(uid)]
    for item in env:
        argv += ["-e", item]
    proc = docker(*argv, NOTEBOOK, "python", "-c", code, check=False, timeout=180)
    return proc.returncode, proc.stdout + proc.stderr


def test_head_runs_ray_and_the_notebook_and_a_second_launch_applies_nothing(head: Head) -> None:
    applied = {r.name for r in head.first.applied if r.ok}
    assert {"ray", "notebook"} <= applied
    assert head.second.nothing_to_do, head.second.summary()
    label = docker(
        "inspect", "--format", '{{index .Config.Labels "' + layout.CONFIG_LABEL + '"}}',
        layout.HEAD_CONTAINER,
    ).stdout  # fmt: skip
    assert label.strip() and head.token not in label
    inspect = docker("inspect", layout.HEAD_CONTAINER, NOTEBOOK).stdout
    assert head.token not in inspect, "the token is in no container's command or environment"


def test_jupyter_on_the_head_shares_the_host_network_on_loopback_only(head: Head) -> None:
    port = head.context.remote_port
    url = f"http://127.0.0.1:{port}/api/status?token={head.context.token}"
    began, status = time.monotonic(), 0
    while time.monotonic() - began < 120 and status != 200:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                status = int(resp.status)
        except (OSError, urllib.error.HTTPError):
            time.sleep(1)
    assert status == 200
    other = global_address()
    assert other is not None
    with pytest.raises(OSError):
        socket.create_connection((other, port), timeout=5).close()


def test_a_driver_in_the_notebook_joins_with_no_arguments(head: Head) -> None:
    code = (
        "import json, ray; ray.init(); "
        "print('NODES=' + json.dumps([n['Alive'] for n in ray.nodes()]))"
    )
    rc, out = driver(head.uid, code)
    assert rc == 0, out
    (nodes,) = [line[6:] for line in out.splitlines() if line.startswith("NODES=")]
    assert json.loads(nodes) == [True]


def test_a_driver_with_another_token_is_refused(head: Head) -> None:
    code = (
        "import pathlib, ray; pathlib.Path('/tmp/other-token').write_text('0' * 64); "
        "ray.init(); print('joined')"
    )
    rc, out = driver(head.uid, code, "RAY_AUTH_TOKEN_PATH=/tmp/other-token")
    assert rc != 0 and "joined" not in out
    assert "uthenticat" in out, out[-2000:]


def test_the_dashboard_on_loopback_wants_the_token(head: Head) -> None:
    assert head.context.cluster is not None
    url = f"http://127.0.0.1:{head.context.cluster.dashboard_port}/api/version"

    def get(headers: dict[str, str]) -> int:
        request = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    assert get({}) == 401
    assert get({"Authorization": "Bearer " + "0" * 64}) == 403
    assert get({"Authorization": f"Bearer {head.token}"}) == 200


def test_an_image_without_ray_stops_with_one_line_naming_images_that_work(
    head: Head, ssh_host: Any, tmp_path: Path
) -> None:
    """An image made here from the bed's with Ray taken out; the running head is left as it
    was (the check comes before any replacement)."""
    name = f"orchestrate-bed-noray-{secrets.token_hex(4)}"
    image = f"orchestrate-bed/noray:{secrets.token_hex(4)}"
    docker(
        "run", "--name", name, "--entrypoint", "sh", head.context.notebook_image, "-c",
        "rm -f /opt/jupyter/bin/ray",
    )  # fmt: skip
    try:
        docker("commit", name, image)
        context = replace(head.context, notebook_image=image)
        before = docker("inspect", "--format", "{{.Id}}", layout.HEAD_CONTAINER).stdout
        with pytest.raises(StepFailed) as caught:
            run_steps(ssh_host, context, tmp_path / "noray.log")
        assert caught.value.step == "ray"
        lines = [x for x in caught.value.line().splitlines() if "has no Ray" in x]
        assert len(lines) == 1 and IMAGES_THAT_WORK in lines[0] and image in lines[0]
        after = docker("inspect", "--format", "{{.Id}}", layout.HEAD_CONTAINER).stdout
        assert after == before
    finally:
        docker("rm", "-f", name, check=False)
        docker("rmi", image, check=False)


def test_hook_status_notes_reads_the_real_heads_view_over_ssh(head: Head, ssh_host: Any) -> None:
    """`status NAME`'s line from the real ``ray status`` over a real SSH session."""
    from orchestrate.plugins.host.ray.status import status_notes

    class Row:
        status = "running"
        cluster = CLUSTER
        node_index = 0

    with connect(ssh_host) as session:
        (line,) = status_notes(Row(), session)
        assert session.commands == 1
    assert line.startswith("ray: 1 node alive, GPUs 0/0 free, CPUs "), line
