"""A bed node's CPU: every process of the node in one cgroup with a fixed CPU quota.

Bed nodes are namespaces on one machine, so without this they share its cores: four nodes
starting Ray each get a quarter of what one node alone gets, which no cloud does (each VM
has its own vCPUs). With a quota a node gets the same CPU whether it runs alone or beside
three others, as long as the quotas of all nodes (plus what runs outside them: the CLI, the
test) fit in the machine's cores.

cgroup v1's ``cpu`` controller (``/sys/fs/cgroup/cpu``): a group named for the node with
``cpu.cfs_quota_us`` = cores x ``cpu.cfs_period_us``. What the bed starts in the node
(holder, sshd, dockerd, ``BedNode.exec``) enters the group through :meth:`NodeCpu.enter_argv`
before it execs, so all its children (SSH sessions, containerd and its shims) are in it
too; dockerd's ``--cgroup-parent`` puts the containers' groups under it (the cgroupfs
driver makes them in every hierarchy, so removal looks in all of them). Groups are named
like the bed's namespaces (``orchbed-...``), so a crashed bed's are found again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_ROOT = CGROUP_ROOT / "cpu"
PERIOD_US = 100_000
#: The sh that moves itself into the group named by $0 and then becomes the command.
_ENTER = 'echo $$ > "$0" && exec "$@"'


class NodeCpuError(RuntimeError):
    """The machine cannot give bed nodes a CPU quota."""


@dataclass(frozen=True)
class NodeCpu:
    """One node's CPU group; ``cores`` is its quota in cores (0.4: 40 ms every 100 ms)."""

    name: str
    cores: float

    @property
    def path(self) -> Path:
        return CPU_ROOT / self.name

    def create(self) -> None:
        if not (CPU_ROOT / "cpu.cfs_quota_us").exists():
            raise NodeCpuError(
                f"no cgroup v1 cpu controller at {CPU_ROOT}: bed nodes cannot get a CPU quota"
            )
        if self.cores <= 0:
            raise NodeCpuError(f"a node's CPU quota must be above 0 cores, not {self.cores}")
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (self.path / "cpu.cfs_quota_us").write_text(f"{round(self.cores * PERIOD_US)}\n")

    def enter_argv(self) -> list[str]:
        """Prefix that runs a command (and all it starts) inside the group."""
        return ["sh", "-c", _ENTER, str(self.path / "cgroup.procs")]

    def docker_options(self) -> list[str]:
        """dockerd options that put every container's group under the node's."""
        return ["--cgroup-parent", f"/{self.name}"]

    def throttled_seconds(self) -> float:
        """How long the group (containers included) was held back by its quota so far."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def remove(self) -> None:
        """The group and what docker made under it, in every hierarchy (its processes must
        have ended); missing groups are fine."""
        remove_groups(self.name)


def remove_groups(name: str) -> None:
    """``name``'s group and its children in every cgroup hierarchy, deepest first."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if not top.is_dir():
            continue
        below = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for group in [*below, top]:
            with contextlib.suppress(OSError):
                group.rmdir()
