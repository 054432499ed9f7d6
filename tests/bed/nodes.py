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

Parts.  This module holds the nodes (:class:`BedNode`, :class:`NodeBed`) and their start;
the rest lives beside it: ``node_network.py`` (namespaces, bridges, links, the /24s),
``node_holder.py`` (the mount namespace and the power stand-ins), ``node_engine.py``
(dockerd and the image), ``node_slots.py`` (cache slots and a crashed bed's leftovers),
``node_cpu.py`` (the CPU quota) and ``node_procs.py`` (setup commands, a namespace's
processes).

Tear-down ends exactly what the bed started, by PID: the node's containers are removed, its
dockerd and sshd stopped, then any process left in the node's network namespace (SSH
sessions, an agent the product started) is killed, the holder ends (its mount namespace with
all of dockerd's mounts goes with it), and the namespaces are deleted (their veths go with
them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
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

from tests.bed.docker_engine import IP_FORWARD, _locked, docker_binary
from tests.bed.node_cpu import NodeCpu
from tests.bed.node_engine import ensure_image, start_dockerd
from tests.bed.node_holder import PRIVATE_DIRS, start_holder
from tests.bed.node_network import (
    LAPTOP_HOST,
    build_network,
    drop_unreachable_route,
    pick_nets,
)
from tests.bed.node_procs import (
    NODE_ENV,
    NodeBedError,
    descends_from,
    kill_netns_processes,
    netns_pids,
    run_setup,
)
from tests.bed.node_slots import record_node, record_path, take_slots
from tests.bed.sshd import Sshd, start_sshd

SSH_PORT = 22


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
        """Where the node's poweroff/reboot commands note what was asked (``node_holder.py``)."""
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
        for pid in netns_pids(self.netns):
            if pid in keep_pids or (engine is not None and descends_from(pid, engine)):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def apply_ingress(self, ruleset: str) -> None:
        """Replace the node's filter table with ``ruleset`` (iptables-restore text)."""
        run_setup(["ip", "netns", "exec", self.netns, "iptables-restore", "-w", "5"], input=ruleset)

    def ingress_rules(self) -> str:
        """The node's current filter table (``iptables-save``), for assertion messages."""
        return run_setup(["ip", "netns", "exec", self.netns, "iptables-save", "-t", "filter"])


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
            kill_netns_processes(ns)
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
        drop_unreachable_route(str(self.internal_net))
        for handle in self._slot_locks:
            handle.close()
        self._slot_locks.clear()
        if self._ip_forward_before == "0" and IP_FORWARD.read_text().strip() != "0":
            IP_FORWARD.write_text("0\n")
            errors.append("ip_forward had turned to 1 during the bed's life; set back to 0")
        if errors:
            raise NodeBedError("tearing the node bed down: " + "; ".join(errors))


def _stop_node(node: BedNode) -> None:
    """End the node's processes, engine first so its containers stop cleanly."""
    if node._dockerd is not None and node._dockerd.poll() is None:
        with contextlib.suppress(Exception):
            node.remove_containers()
        end_child(node._dockerd, grace_s=20)
    node._dockerd = None
    record_path(node.data_root.parent).unlink(missing_ok=True)
    if node.sshd is not None:
        node.sshd.stop()
        node.sshd = None
    kill_netns_processes(node.netns)
    if node._holder is not None:
        end_child(node._holder, grace_s=5)
    node._holder = None
    if node.cpu is not None:
        node.cpu.remove()
    shutil.rmtree(node.workdir, ignore_errors=True)


def _start_node(
    node: BedNode,
    net_ns: str,
    authorized_key: str,
    image: tuple[str, Path, Sequence[str]] | None,
) -> None:
    began = time.monotonic()
    start_holder(node)
    start_dockerd(node, ready_timeout=60)
    record_node(node, net_ns)
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
        ensure_image(node, *image)
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
    slots, slot_locks = take_slots(cache_dir, count)
    # Picking the subnets and taking them (address, route) is one step for concurrent beds.
    with _locked(cache_dir / "nodes" / "networks.lock"):
        external_net, internal_net = pick_nets()
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
            links = build_network(bed, count)
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
