"""A node's Docker engine: its dockerd (the lone-host bed's flags, its own data root and
sockets) and the notebook image in it, imported once per cache slot.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrate.core.flows.processes import end_child

from tests.bed.docker_engine import STORAGE_DRIVERS
from tests.bed.node_procs import NODE_ENV, NodeBedError

if TYPE_CHECKING:
    from tests.bed.nodes import BedNode


def _engine_answers(node: BedNode) -> bool:
    try:
        return node.docker("version", "--format", "{{.Server.Version}}", timeout=10,
                           check=False).returncode == 0  # fmt: skip
    except subprocess.TimeoutExpired:
        return False


def start_dockerd(node: BedNode, ready_timeout: float) -> None:
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    node.data_root.mkdir(parents=True, exist_ok=True)
    errors = []
    for driver in STORAGE_DRIVERS:
        argv = [
            *node.enter_argv(), dockerd,
            "--data-root", str(node.data_root),
            "--exec-root", "/run/docker",
            "--pidfile", "/run/docker.pid",
            "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--storage-driver", driver,
            "--exec-opt", "native.cgroupdriver=cgroupfs",
            "--host", "unix:///var/run/docker.sock",
            "--host", node.docker_host,
            *(node.cpu.docker_options() if node.cpu is not None else ()),
        ]  # fmt: skip
        log_path = node.workdir / "dockerd.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=NODE_ENV
            )
        node._dockerd = proc
        deadline = time.monotonic() + ready_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _engine_answers(node):
                node.storage_driver = driver
                return
            time.sleep(0.1)
        end_child(proc, grace_s=10)
        node._dockerd = None
        errors.append(f"{driver}: " + log_path.read_text(errors="replace")[-3000:])
    raise NodeBedError(f"{node.name}: dockerd did not start:\n" + "\n".join(errors))


def ensure_image(node: BedNode, tag: str, tarball: Path, changes: Sequence[str]) -> None:
    """Import the notebook image into the node's engine unless its cached data root has it.

    Tagged ``:latest`` too, as on the machine's engine.  Images of older recipes in the
    node's data root are removed: that engine is the bed's alone, and a changed recipe would
    otherwise leave a gigabyte per slot behind each time.
    """
    repository, _ = tag.rsplit(":", 1)
    if node.docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode != 0:
        argv = ["import"]
        for change in changes:
            argv += ["--change", change]
        node.docker(*argv, str(tarball), tag, timeout=900)
    node.docker("tag", tag, f"{repository}:latest")
    listed = node.docker("images", repository, "--format", "{{.Repository}}:{{.Tag}}").stdout
    stale = [name for name in listed.split() if name not in (tag, f"{repository}:latest")]
    if stale:
        node.docker("rmi", *stale, check=False)
