"""A node bed's cache slots: a data root per node, locked while a bed uses it, and the
record that lets the next bed on a slot end what a crashed one left running.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tests.bed.node_cpu import remove_groups
from tests.bed.node_network import NODE_NET, drop_unreachable_route
from tests.bed.node_procs import kill_netns_processes

if TYPE_CHECKING:
    from tests.bed.nodes import BedNode


def take_slots(cache_dir: Path, count: int) -> tuple[list[int], list[IO[str]]]:
    """Lock ``count`` node cache slots this process alone will use (lowest free first)."""
    root = cache_dir / "nodes"
    root.mkdir(parents=True, exist_ok=True)
    slots: list[int] = []
    handles: list[IO[str]] = []
    slot = 0
    while len(slots) < count:
        handle = (root / f"{slot}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
        else:
            slots.append(slot)
            handles.append(handle)
        slot += 1
    for taken in slots:
        _clear_dead_bed(root / str(taken))
    return slots, handles


def record_path(slot_dir: Path) -> Path:
    return slot_dir / "bed.json"


def record_node(node: BedNode, net_ns: str) -> None:
    """Note in the slot what this node runs, for :func:`_clear_dead_bed` after a crash."""
    record = {
        "dockerd": node._dockerd.pid if node._dockerd else None,
        "namespaces": [node.netns, net_ns],
        "cgroup": node.cpu.name if node.cpu is not None else None,
        "workdir": str(node.workdir),
        "route": str(ipaddress.IPv4Network(f"{node.internal_address}/24", strict=False)),
    }
    record_path(node.data_root.parent).write_text(json.dumps(record))


def _clear_dead_bed(slot_dir: Path) -> None:
    """End what a bed that died without its tear-down (pytest killed) left on this slot.

    The caller holds the slot's lock, so no live bed uses it: a dockerd still running on the
    slot's data root is an orphan, and two engines on one data root would corrupt it.  Only
    what the record names is touched, and only if it is what the bed made (a dockerd whose
    command line names this data root; namespaces named like the bed's).
    """
    try:
        record = json.loads(record_path(slot_dir).read_text())
    except (FileNotFoundError, ValueError):
        return
    pid = record.get("dockerd")
    if isinstance(pid, int):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        if (
            cmdline
            and Path(cmdline[0].decode()).name == "dockerd"
            and (str(slot_dir / "docker-data").encode() in cmdline)
        ):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
    for ns in record.get("namespaces", []):
        if isinstance(ns, str) and ns.startswith("orchbed-") and Path("/run/netns", ns).exists():
            kill_netns_processes(ns)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
    group = record.get("cgroup")
    if isinstance(group, str) and group.startswith("orchbed-") and "/" not in group:
        remove_groups(group)
    route = record.get("route")
    if isinstance(route, str) and ipaddress.IPv4Network(route).subnet_of(NODE_NET):
        drop_unreachable_route(route)
    workdir = record.get("workdir")
    if isinstance(workdir, str) and Path(workdir).name.startswith("orchbed-"):
        shutil.rmtree(workdir, ignore_errors=True)
    record_path(slot_dir).unlink(missing_ok=True)
