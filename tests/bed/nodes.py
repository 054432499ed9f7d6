"""Several "VMs" on one machine: bed nodes, each with its own network, sshd and Docker engine.

A cluster needs hosts that are distinct where it matters: distinct addresses that cross a real
link, an SSH server each with its own host key, and a container engine each whose containers
the other nodes do not see.  A bed node is built from kernel namespaces and the same real
programs as the lone-host bed (``tests/bed/sshd.py``, ``tests/bed/docker_engine.py``):

Network. Every bed gets one namespace ``<prefix>-net`` that holds two bridges, ``bext`` and
``bint``. Each node is a namespace ``<prefix>-n<i>`` with two veth links: ``ext0`` on
``bext`` (its EXTERNAL address, what the fake GCE reports as ``natIP``) and ``int0`` on
``bint`` (its INTERNAL address, the fake's ``networkIP``). One more veth joins the root
namespace (the "laptop", where pytest and the CLI run) to ``bext``, so the laptop reaches
every node's external address and no internal one: the laptop has no address on ``bint`` and
no route to it. Because the machine's default route would otherwise carry a packet for an
internal address off the machine, the bed adds an ``unreachable`` route for its internal /24
in the root namespace (removed at tear-down): a connect from the laptop to an internal
address fails at once with "No route to host" and nothing leaves. Bridging is layer 2, so
nothing routes and ``ip_forward`` stays as it was (it is read before and after, and the bed
fails if it changed). Addresses come from ``198.19.0.0/16``, the half of the never-routed
benchmarking range that ``tests/bed/wan.py`` does not use: both /24s are picked per bed
among those no address or route of the root namespace uses, under a lock, so beds of
concurrent sessions never collide. Nodes have no default route: they need no internet.

Host names.  Each node has its own UTS namespace, named like its network namespace, with an
``/etc/hosts`` of its own that resolves that name (sudo warns on every call otherwise), so
Ray and ``--network host`` containers see distinct host names.

Mounts.  The product's remote commands use ``sudo docker`` on the default socket, so a
command run over SSH on node *i* must find node *i*'s engine at ``/var/run/docker.sock``.
Each node therefore has a private mount namespace, held by a small "holder" process started
with ``unshare --mount --propagation private`` inside the node's network namespace.  The
holder mounts, in that namespace only: a fresh sysfs (so ``/sys/class/net`` shows the node's
interfaces, as ``ip netns exec`` does) with the machine's cgroup hierarchies bound back under
it (dockerd's cgroupfs driver needs them, and ``ip netns exec`` would lose them); a tmpfs on
``/run`` (``/var/run`` is a link to it here), so the node's socket, sshd's privilege
separation folder ``/run/sshd``, dockerd's exec root and sudo's timestamps are its own; and
the node's own folders over the places the product writes on a host (``/etc/orchestrate``,
``/var/lib/orchestrate``, ``/usr/local/lib/orchestrate``, ``/var/log``), so a token written
on one node is not seen by another (nor by the laptop).  sshd and dockerd are then started
with ``nsenter`` into the holder's mount and network namespaces, so every SSH session (and
the ``sudo`` in it) inherits them.

Engines.  Each node's dockerd runs with the lone-host bed's flags and reasons
(``--iptables=false --ip6tables=false --ip-forward=false``, overlay2 with vfs as fallback,
the cgroupfs driver), its data root under the bed cache
(``/var/cache/orchestrate-bed/nodes/<slot>/docker-data``) so the notebook image is imported
once per slot and kept between runs, and two sockets: ``/var/run/docker.sock`` inside the node
and ``<workdir>/docker.sock`` that the tests reach from the laptop.  A slot is a cache folder
locked (flock) for as long as a bed uses it: two sessions never share a data root; a second
concurrent session takes the next slots (and imports the image there once).

CPU.  Nodes share the machine's cores unless ``start_nodes(cpu_cores=...)`` gives each the
same quota (``tests/bed/node_cpu.py``: its holder, sshd, dockerd and containers in one
cgroup), so that a node gets the same CPU alone or beside others, as a VM does.

Firewall.  GCE enforces firewall rules outside the VM; the bed enforces them in each node's
namespace with iptables on ``ext0`` and ``int0`` only (the node's own loopback and Docker
bridges stay open, as inside a VM).  :meth:`NodeBed.apply_ingress` takes the rules computed
from the fake's state by ``tests/bed/gce_firewall.py``; a node without an instance gets an
empty ruleset, which denies all ingress as on GCE.

Power.  A node shares the machine's PID 1, so the real ``poweroff`` would stop the machine.
Inside a node, ``systemctl``, ``poweroff``, ``shutdown``, ``halt`` and ``reboot`` are bound
over by a small script that only notes the request in the node's workdir; the fake GCE reads
it on its next request and stops the instance, as GCE does when a guest powers off.  Stopping
an instance powers its node off (:meth:`BedNode.power_off`: the guest's processes end, its
containers stop and stay), starting it boots it (:meth:`BedNode.power_on`: containers with a
restart policy start again); the bed's own sshd and dockerd stand for what the boot starts
and keep running.  Deleting the instance wipes the node (:meth:`BedNode.wipe`: containers,
the product's folders, processes the bed did not start) before the next instance takes it.

Tear-down ends exactly what the bed started, by PID: the node's containers are removed, its
dockerd and sshd stopped, then any process left in the node's network namespace (SSH
sessions, an agent the product started) is killed, the holder ends (its mount namespace with
all of dockerd's mounts goes with it), and the namespaces are deleted (their veths go with
them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orchestrate.core.flows.processes import end_child

from tests.bed.docker_engine import IP_FORWARD, STORAGE_DRIVERS, _locked, docker_binary
from tests.bed.node_cpu import NodeCpu, remove_groups
from tests.bed.sshd import Sshd, start_sshd

#: The half of 198.18.0.0/15 the WAN bed leaves alone.
NODE_NET = ipaddress.IPv4Network("198.19.0.0/16")
#: Host part of the laptop's address on the external bridge, and of node 0's addresses.
LAPTOP_HOST = 1
FIRST_NODE_HOST = 10
EXTERNAL_IF = "ext0"
INTERNAL_IF = "int0"
#: Where the product writes on a host: private per node (see the module docstring).
PRIVATE_DIRS = (
    "/etc/orchestrate",
    "/var/lib/orchestrate",
    "/usr/local/lib/orchestrate",
    "/var/log",
)
SSH_PORT = 22
#: The environment of what the bed starts in a node: nothing of the caller's (a DOCKER_HOST
#: there would point ``docker`` elsewhere), as a session over SSH gets nothing of the laptop's.
NODE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class NodeBedError(RuntimeError):
    """A bed node could not be built, or part of it died."""


def _run(argv: Sequence[str], *, timeout: float = 30, input: str | None = None) -> str:
    """Run a setup command; raise with its full output on failure."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, input=input
    )
    if proc.returncode != 0:
        raise NodeBedError(
            f"{' '.join(argv)} failed with exit status {proc.returncode}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


# The holder: builds the node's mounts, says "ready", then waits to be ended.  Arguments:
# $1 the node's workdir (tmp), $2 the node's private folders' root, $3 its host name; the
# rest are the folders to make private.  `exec sleep` keeps the holder's PID the one we started.
_HOLDER = r"""
set -eu
work=$1; private=$2; name=$3; shift 3
hostname "$name"
mount --bind "$work/hosts" /etc/hosts
mkdir -p "$work/cgroup"
mount --rbind /sys/fs/cgroup "$work/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "$work/cgroup" /sys/fs/cgroup
umount -l "$work/cgroup"
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/lock
for dir in "$@"; do
    mkdir -p "$dir" "$private$dir"
    mount --bind "$private$dir" "$dir"
done
done=""
for cmd in /usr/bin/systemctl /usr/sbin/poweroff /usr/sbin/shutdown /usr/sbin/halt \
        /usr/sbin/reboot; do
    target=$(readlink -f "$cmd" || true)
    if [ -n "$target" ] && [ -e "$target" ]; then
        case " $done " in
            *" $target "*) ;;
            *) mount --bind "$work/power" "$target"; done="$done $target" ;;
        esac
    fi
done
echo ready
exec sleep infinity
"""


# Stands in for systemctl/poweroff/shutdown/halt/reboot inside a node ($1: where to note the
# request).  A node shares the machine's PID 1, so the real commands would power off the
# machine; this one notes "poweroff" or "reboot" for the fake GCE, which then stops the
# instance as GCE does when its guest powers off.  Any other systemctl call fails as it does
# on a host without systemd.
_POWER = r"""#!/bin/sh
note=%(note)s
name=$(basename "$0")
case "$name" in
    poweroff|halt|shutdown) action=poweroff ;;
    reboot) action=reboot ;;
    *)
        case "$*" in
            *poweroff*|*halt*) action=poweroff ;;
            *reboot*) action=reboot ;;
            *) echo "System has not been booted with systemd as init system (PID 1)." \
                   "Can't operate." >&2; exit 1 ;;
        esac ;;
esac
for arg in "$@"; do [ "$arg" = "-r" ] && action=reboot; done
echo "$action" > "$note"
"""


@dataclass
class BedNode:
    """One bed node; ``exec``/``docker`` run inside it, ``ssh_*`` reach it from the laptop."""

    index: int
    slot: int
    netns: str
    external_address: str
    internal_address: str
    workdir: Path
    data_root: Path
    user: str
    key_path: Path
    ssh_port: int = SSH_PORT
    host_key: str = ""
    storage_driver: str = ""
    #: How long this node took to start, and the part of it spent importing the image.
    startup_seconds: float = 0.0
    image_seconds: float = 0.0
    #: The node's CPU quota (``tests/bed/node_cpu.py``); None: it shares the machine's cores.
    cpu: NodeCpu | None = None
    sshd: Sshd | None = field(default=None, repr=False)
    _holder: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _dockerd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def docker_host(self) -> str:
        """The node engine's socket as the laptop reaches it."""
        return f"unix://{self.workdir / 'docker.sock'}"

    def enter_argv(self) -> list[str]:
        """Prefix that runs a command inside the node's network and mount namespaces."""
        if self._holder is None or self._holder.poll() is not None:
            raise NodeBedError(f"{self.name} is not running")
        inside = ["nsenter", "--target", str(self._holder.pid), "--mount", "--uts", "--net", "--"]
        return [*self.cpu.enter_argv(), *inside] if self.cpu is not None else inside

    def exec(
        self, cmd: str | Sequence[str], *, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` (a shell line, or an argv) as root inside the node, as a session
        over SSH would see it (same network, same mounts: ``docker`` is the node's engine)."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(
            [*self.enter_argv(), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=NODE_ENV,
        )
        if check and proc.returncode != 0:
            raise NodeBedError(
                f"{self.name}: {shlex.join(argv)} failed with exit status {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return proc

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this node's engine (from the laptop, by its socket)."""
        argv = [docker_binary(), "-H", self.docker_host, *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise NodeBedError(
                f"{self.name}: docker {' '.join(args)} failed with exit status "
                f"{proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def remove_containers(self) -> None:
        """Remove every container of this node's engine (between tests; at tear-down)."""
        ids = self.docker("ps", "-aq", timeout=30).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, timeout=120)

    def wipe(self) -> None:
        """Make the node a fresh VM again (its instance was deleted): no container, no
        process but the bed's own, the product's folders empty.  The image stays (it stands
        for the boot disk's image) and so do sshd and its host key."""
        self.remove_containers()
        self._kill_guest_processes()
        self.power_note.unlink(missing_ok=True)
        for folder in PRIVATE_DIRS:
            private = self.workdir / "private" / folder.lstrip("/")
            for entry in private.iterdir() if private.is_dir() else ():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self.exec("rm -rf /run/orchestrate*", timeout=30)

    @property
    def power_note(self) -> Path:
        """Where the node's poweroff/reboot commands note what was asked (see ``_POWER``)."""
        return self.workdir / "power-requested"

    def take_power_request(self) -> str | None:
        """``"poweroff"`` or ``"reboot"`` if the node's guest asked for it since the last
        call (the request is consumed), else None."""
        try:
            action = self.power_note.read_text().strip()
        except FileNotFoundError:
            return None
        self.power_note.unlink(missing_ok=True)
        return action or None

    def power_off(self) -> None:
        """What a VM's power-off does to it: every process ends (the bed's sshd and dockerd
        excepted: they stand for the boot's own), containers stop and stay, disk stays."""
        ids = self.docker("ps", "-q", timeout=30).stdout.split()
        if ids:
            self.docker("stop", "--time", "5", *ids, timeout=120)
        self._kill_guest_processes()

    def power_on(self) -> None:
        """What booting does: dockerd starts the containers whose restart policy says so."""
        stopped = self.docker("ps", "-aq", "--filter", "status=exited", timeout=30).stdout
        for container in stopped.split():
            policy = self.docker(
                "inspect", "--format", "{{.HostConfig.RestartPolicy.Name}}", container
            ).stdout.strip()
            if policy in ("always", "unless-stopped"):
                self.docker("start", container, timeout=60)

    def _kill_guest_processes(self) -> None:
        """SIGKILL what runs in the node besides the bed's holder, sshd and dockerd tree."""
        keep_pids = {p.pid for p in (self._holder, self._dockerd) if p is not None}
        if self.sshd is not None:
            keep_pids.add(self.sshd.pid)
        engine = self._dockerd.pid if self._dockerd is not None else None
        for pid in _netns_pids(self.netns):
            if pid in keep_pids or (engine is not None and _descends_from(pid, engine)):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def apply_ingress(self, ruleset: str) -> None:
        """Replace the node's filter table with ``ruleset`` (iptables-restore text)."""
        _run(["ip", "netns", "exec", self.netns, "iptables-restore", "-w", "5"], input=ruleset)

    def ingress_rules(self) -> str:
        """The node's current filter table (``iptables-save``), for assertion messages."""
        return _run(["ip", "netns", "exec", self.netns, "iptables-save", "-t", "filter"])


@dataclass
class NodeBed:
    """The bed's namespaces and nodes; ``close()`` is idempotent and safe when half built."""

    prefix: str
    net_ns: str
    laptop_if: str
    laptop_address: str
    external_net: ipaddress.IPv4Network
    internal_net: ipaddress.IPv4Network
    nodes: list[BedNode] = field(default_factory=list)
    startup_seconds: float = 0.0
    _namespaces: list[str] = field(default_factory=list, repr=False)
    _slot_locks: list[IO[str]] = field(default_factory=list, repr=False)
    _ip_forward_before: str = "0"

    def reset(self) -> None:
        """Every node wiped (:meth:`BedNode.wipe`) and denying all ingress again: what a
        test that used the nodes leaves for the next one."""
        for node in self.nodes:
            node.wipe()
            node.apply_ingress(deny_all_ruleset())

    def __iter__(self) -> Iterator[BedNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index: int) -> BedNode:
        return self.nodes[index]

    def close(self) -> None:
        errors: list[str] = []
        # In parallel: each dockerd takes about a second to stop its containers and exit.
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(self.nodes))) as pool:
            futures = {pool.submit(_stop_node, node): node for node in self.nodes}
            for future, node in futures.items():
                try:
                    future.result(timeout=120)
                except Exception as exc:  # keep tearing down the rest
                    errors.append(f"{node.name}: {exc}")
        for ns in reversed(self._namespaces):
            _kill_netns_processes(ns)
            proc = subprocess.run(
                ["ip", "netns", "delete", ns], capture_output=True, text=True, timeout=30
            )
            if proc.returncode != 0 and Path("/run/netns", ns).exists():
                errors.append(f"ip netns delete {ns}: {proc.stderr.strip()}")
        self._namespaces.clear()
        for node in self.nodes:  # again: processes the namespaces held have ended now
            if node.cpu is not None:
                node.cpu.remove()
        # Deleting the net namespace deleted the laptop's veth end too; make sure.
        subprocess.run(["ip", "link", "delete", self.laptop_if], capture_output=True, timeout=30)
        _drop_unreachable_route(str(self.internal_net))
        for handle in self._slot_locks:
            handle.close()
        self._slot_locks.clear()
        if self._ip_forward_before == "0" and IP_FORWARD.read_text().strip() != "0":
            IP_FORWARD.write_text("0\n")
            errors.append("ip_forward had turned to 1 during the bed's life; set back to 0")
        if errors:
            raise NodeBedError("tearing the node bed down: " + "; ".join(errors))


def _netns_pids(ns: str) -> list[int]:
    """Processes in a network namespace this bed created."""
    proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    return [int(word) for word in proc.stdout.split() if word.isdigit()]


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``ancestor`` is ``pid`` or one of its parents (by /proc's parent links)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _kill_netns_processes(ns: str) -> None:
    """SIGKILL what is still running in a namespace this bed created (SSH sessions, agents)."""
    for pid in _netns_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_node(node: BedNode) -> None:
    """End the node's processes, engine first so its containers stop cleanly."""
    if node._dockerd is not None and node._dockerd.poll() is None:
        with contextlib.suppress(Exception):
            node.remove_containers()
        end_child(node._dockerd, grace_s=20)
    node._dockerd = None
    _record_path(node.data_root.parent).unlink(missing_ok=True)
    if node.sshd is not None:
        node.sshd.stop()
        node.sshd = None
    _kill_netns_processes(node.netns)
    if node._holder is not None:
        end_child(node._holder, grace_s=5)
    node._holder = None
    if node.cpu is not None:
        node.cpu.remove()
    shutil.rmtree(node.workdir, ignore_errors=True)


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Networks of the root namespace's IPv4 addresses and routes (to pick /24s nobody uses)."""
    nets = []
    for line in _run(["ip", "-o", "-4", "addr", "show"]).splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in _run(["ip", "-4", "route", "show"]).splitlines():
        words = line.split()
        destination = words[1] if words[0] in ("unreachable", "blackhole", "prohibit") else words[0]
        if destination != "default":
            nets.append(ipaddress.IPv4Network(destination, strict=False))
    return nets


def _pick_nets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """Two /24s of :data:`NODE_NET` no address or route of the root namespace uses."""
    used = _used_ipv4_networks()
    free = [n for n in NODE_NET.subnets(new_prefix=24) if not any(n.overlaps(u) for u in used)]
    if len(free) < 2:
        raise NodeBedError(f"no two free /24s left in {NODE_NET} for a node bed")
    external = free.pop(secrets.randbelow(len(free)))
    return external, free[secrets.randbelow(len(free))]


def _drop_unreachable_route(network: str) -> None:
    subprocess.run(
        ["ip", "route", "delete", "unreachable", network], capture_output=True, timeout=30
    )


def _take_slots(cache_dir: Path, count: int) -> tuple[list[int], list[IO[str]]]:
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


def _record_path(slot_dir: Path) -> Path:
    return slot_dir / "bed.json"


def _record(node: BedNode, net_ns: str) -> None:
    """Note in the slot what this node runs, for :func:`_clear_dead_bed` after a crash."""
    record = {
        "dockerd": node._dockerd.pid if node._dockerd else None,
        "namespaces": [node.netns, net_ns],
        "cgroup": node.cpu.name if node.cpu is not None else None,
        "workdir": str(node.workdir),
        "route": str(ipaddress.IPv4Network(f"{node.internal_address}/24", strict=False)),
    }
    _record_path(node.data_root.parent).write_text(json.dumps(record))


def _clear_dead_bed(slot_dir: Path) -> None:
    """End what a bed that died without its tear-down (pytest killed) left on this slot.

    The caller holds the slot's lock, so no live bed uses it: a dockerd still running on the
    slot's data root is an orphan, and two engines on one data root would corrupt it.  Only
    what the record names is touched, and only if it is what the bed made (a dockerd whose
    command line names this data root; namespaces named like the bed's).
    """
    try:
        record = json.loads(_record_path(slot_dir).read_text())
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
            _kill_netns_processes(ns)
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=30)
    group = record.get("cgroup")
    if isinstance(group, str) and group.startswith("orchbed-") and "/" not in group:
        remove_groups(group)
    route = record.get("route")
    if isinstance(route, str) and ipaddress.IPv4Network(route).subnet_of(NODE_NET):
        _drop_unreachable_route(route)
    workdir = record.get("workdir")
    if isinstance(workdir, str) and Path(workdir).name.startswith("orchbed-"):
        shutil.rmtree(workdir, ignore_errors=True)
    _record_path(slot_dir).unlink(missing_ok=True)


def _netns(bed: NodeBed, name: str) -> str:
    _run(["ip", "netns", "add", name])
    bed._namespaces.append(name)
    # IPv6 off keeps the links quiet; nothing here uses it.
    _run(
        [
            "ip", "netns", "exec", name, "sysctl", "-q", "-w",
            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
        ]
    )  # fmt: skip
    _run(["ip", "-n", name, "link", "set", "lo", "up"])
    return name


def _build_network(bed: NodeBed, count: int) -> list[tuple[str, str, str]]:
    """Namespaces, bridges and links; returns (netns, external, internal) per node."""
    net = _netns(bed, bed.net_ns)
    for bridge in ("bext", "bint"):
        _run(["ip", "-n", net, "link", "add", bridge, "type", "bridge"])
        _run(["ip", "-n", net, "link", "set", bridge, "up"])
    # The laptop's end is the only link in the root namespace.
    _run(["ip", "link", "add", bed.laptop_if, "type", "veth", "peer", "name", "up0", "netns", net])
    _run(["ip", "-n", net, "link", "set", "up0", "master", "bext", "up"])
    prefix = bed.external_net.prefixlen
    _run(["ip", "addr", "add", f"{bed.laptop_address}/{prefix}", "dev", bed.laptop_if])
    _run(["ip", "link", "set", bed.laptop_if, "up"])
    _run(["ip", "route", "add", "unreachable", str(bed.internal_net)])
    out = []
    for i in range(count):
        ns = _netns(bed, f"{bed.prefix}-n{i}")
        external = str(bed.external_net.network_address + FIRST_NODE_HOST + i)
        internal = str(bed.internal_net.network_address + FIRST_NODE_HOST + i)
        for ifname, peer, bridge, address, net_prefix in (
            (EXTERNAL_IF, f"e{i}", "bext", external, prefix),
            (INTERNAL_IF, f"i{i}", "bint", internal, bed.internal_net.prefixlen),
        ):
            # Made inside the node with its peer moved straight into the bed's net namespace.
            _run(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer,
                  "netns", net])  # fmt: skip
            _run(["ip", "-n", net, "link", "set", peer, "master", bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{address}/{net_prefix}", "dev", ifname])
            _run(["ip", "-n", ns, "link", "set", ifname, "up"])
        out.append((ns, external, internal))
    return out


def _start_holder(node: BedNode) -> None:
    private = node.workdir / "private"
    private.mkdir(parents=True, exist_ok=True)
    power = node.workdir / "power"
    power.write_text(_POWER % {"note": shlex.quote(str(node.power_note))})
    power.chmod(0o755)
    # Its own host name, resolvable like a VM's (sudo warns on every call otherwise).
    hosts = Path("/etc/hosts").read_text()
    (node.workdir / "hosts").write_text(f"{hosts.rstrip()}\n127.0.1.1\t{node.netns}\n")
    argv = [
        *(node.cpu.enter_argv() if node.cpu is not None else ()),
        "nsenter", f"--net=/run/netns/{node.netns}", "--",
        "unshare", "--mount", "--uts", "--propagation", "private", "--",
        "sh", "-c", _HOLDER, "holder", str(node.workdir), str(private), node.netns,
        *PRIVATE_DIRS,
    ]  # fmt: skip
    log = (node.workdir / "holder.log").open("ab")
    holder = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
    log.close()
    node._holder = holder
    assert holder.stdout is not None
    line = holder.stdout.readline()  # "ready", or EOF when the script failed
    holder.stdout.close()
    if line.strip() != b"ready":
        end_child(holder, grace_s=2)
        raise NodeBedError(
            f"{node.name}: its mount namespace could not be set up:\n"
            + (node.workdir / "holder.log").read_text(errors="replace")
        )


def _engine_answers(node: BedNode) -> bool:
    try:
        return node.docker("version", "--format", "{{.Server.Version}}", timeout=10,
                           check=False).returncode == 0  # fmt: skip
    except subprocess.TimeoutExpired:
        return False


def _start_dockerd(node: BedNode, ready_timeout: float) -> None:
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


def _ensure_image(node: BedNode, tag: str, tarball: Path, changes: Sequence[str]) -> None:
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


def _start_node(
    node: BedNode,
    net_ns: str,
    authorized_key: str,
    image: tuple[str, Path, Sequence[str]] | None,
) -> None:
    began = time.monotonic()
    _start_holder(node)
    _start_dockerd(node, ready_timeout=60)
    _record(node, net_ns)
    node.remove_containers()  # left by a session that died before its tear-down
    sshd_dir = node.workdir / "sshd"
    sshd_dir.mkdir()
    node.sshd = start_sshd(
        sshd_dir,
        user=node.user,
        authorized_key=authorized_key,
        listen=node.external_address,
        # Like a VM's sshd on 0.0.0.0: other nodes reach it on the internal address when
        # the rules allow (the probe that waits for the banner uses the external one).
        also_listen=[node.internal_address],
        port=SSH_PORT,
        enter=node.enter_argv(),
    )
    node.host_key = node.sshd.host_key_pub
    if image is not None:
        imported = time.monotonic()
        _ensure_image(node, *image)
        node.image_seconds = time.monotonic() - imported
    node.startup_seconds = time.monotonic() - began


def start_nodes(
    count: int,
    *,
    cache_dir: Path,
    user: str,
    key_path: Path,
    authorized_key: str,
    image: tuple[str, Path, Sequence[str]] | None = None,
    prefix: str | None = None,
    cpu_cores: float | None = None,
) -> NodeBed:
    """Build ``count`` nodes (in parallel) and return the bed; close it when done.

    ``image``: (tag, rootfs tarball, ``docker import --change`` lines) to have in every
    node's engine.  ``cpu_cores``: each node's CPU quota (``tests/bed/node_cpu.py``), the
    same for every node; None shares the machine's cores.  All ingress to the nodes is
    denied until :meth:`BedNode.apply_ingress` says otherwise (the laptop reaches sshd once
    the fake's SSH rule applies).  Needs root.
    """
    if os.geteuid() != 0:
        raise NodeBedError("the node bed needs root (namespaces, mounts, sshd, dockerd)")
    began = time.monotonic()
    tag = secrets.token_hex(3)
    prefix = prefix or f"orchbed-{tag}"
    slots, slot_locks = _take_slots(cache_dir, count)
    # Picking the subnets and taking them (address, route) is one step for concurrent beds.
    with _locked(cache_dir / "nodes" / "networks.lock"):
        external_net, internal_net = _pick_nets()
        bed = NodeBed(
            prefix=prefix,
            net_ns=f"{prefix}-net",
            laptop_if=f"obed{tag}",
            laptop_address=str(external_net.network_address + LAPTOP_HOST),
            external_net=external_net,
            internal_net=internal_net,
            _slot_locks=slot_locks,
            _ip_forward_before=IP_FORWARD.read_text().strip(),
        )
        try:
            links = _build_network(bed, count)
        except BaseException:
            with contextlib.suppress(Exception):
                bed.close()
            raise
    try:
        for i, (ns, external, internal) in enumerate(links):
            workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-n{i}-"))
            # sshd reads authorized_keys as the login user: the folders must be traversable.
            workdir.chmod(0o755)
            bed.nodes.append(
                BedNode(
                    index=i,
                    slot=slots[i],
                    netns=ns,
                    external_address=external,
                    internal_address=internal,
                    workdir=workdir,
                    data_root=cache_dir / "nodes" / str(slots[i]) / "docker-data",
                    user=user,
                    key_path=key_path,
                    cpu=None if cpu_cores is None else NodeCpu(f"{prefix}-n{i}", cpu_cores),
                )
            )
            if bed.nodes[-1].cpu is not None:
                bed.nodes[-1].cpu.create()
        # In parallel: each node waits mostly on its own dockerd (and, the first time, on
        # its image import), so N nodes start in about the time of one.
        with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
            futures = [
                pool.submit(_start_node, node, bed.net_ns, authorized_key, image)
                for node in bed.nodes
            ]
            for future in futures:
                future.result(timeout=1200)
        for node in bed.nodes:
            node.apply_ingress(deny_all_ruleset())
        if IP_FORWARD.read_text().strip() != bed._ip_forward_before:
            raise NodeBedError("ip_forward changed while building the node bed")
    except BaseException:
        with contextlib.suppress(Exception):
            bed.close()
        raise
    bed.startup_seconds = time.monotonic() - began
    return bed


def deny_all_ruleset() -> str:
    """An empty GCE ruleset: no ingress on the node's links (what GCE does without rules)."""
    from tests.bed.gce_firewall import iptables_ruleset

    return iptables_ruleset([])


def docker_in(node: BedNode, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` run inside ``node`` on the default socket, the way the product's
    commands over SSH reach the node's engine; returns the result without checking it."""
    return node.exec(["docker", *args], timeout=timeout, check=False)
