"""The multi-node bed: distinct hosts, private engines, and the fake GCE's firewall enforced.

A cluster test is only worth something if its hosts are distinct where a cloud's are: each
node answers SSH with its own host key on its own address, its Docker engine is its own, and
what the firewall rules the product creates do not allow is really unreachable.  These tests
prove that of the bed (``tests/bed/nodes.py``), with libcloud's real GCE driver creating the
instances and rules in the fake over HTTP, and real sockets across the bed's links.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bed.fixtures_host import SshHost
from tests.bed.gce_fake import GceFake
from tests.bed.gce_firewall import Allow, iptables_ruleset, node_allows
from tests.bed.nodes import BedNode, NodeBed, docker_in
from tests.test_bed_gce import make_driver, ubuntu

SSH_TAG = "orchestrate-ssh"
CLUSTER_TAG = "orchestrate-cluster-bedtest"
Rule = dict[str, Any]
PORT = 8265  # Ray's dashboard port: what the cluster rule must keep from the laptop
CONNECT_TIMEOUT = 2.0

# Runs inside a node: "open" if a TCP connect succeeds within the timeout, else the error.
_CONNECT_PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except OSError as exc:
    print(type(exc).__name__)
"""


def _from_node(node: BedNode, address: str, port: int) -> str:
    probe = ["/usr/bin/python3", "-c", _CONNECT_PROBE, address, str(port), str(CONNECT_TIMEOUT)]
    out = node.exec(probe, timeout=30)
    return out.stdout.strip()


def _from_laptop(address: str, port: int) -> str:
    try:
        socket.create_connection((address, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        return type(exc).__name__
    return "open"


def _create(driver: Any, name: str, tags: list[str]) -> Any:
    return driver.create_node(
        name, "n1-standard-2", ubuntu(driver), location="us-east1-d", ex_tags=tags
    )


def _ssh_rule(driver: Any) -> None:
    """The product's rule: tcp:22 from anywhere to instances tagged orchestrate-ssh."""
    driver.ex_create_firewall(
        "orchestrate-ssh",
        allowed=[{"IPProtocol": "tcp", "ports": ["22"]}],
        source_ranges=["0.0.0.0/0"],
        target_tags=[SSH_TAG],
    )


def _ssh_run(node: BedNode, address: str, host_key: str, command: str) -> str:
    """Run ``command`` over real SSH with the host key pinned (a wrong key fails)."""
    import paramiko

    kind, blob = host_key.split()[:2]
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(address, kind, paramiko.Ed25519Key(data=base64.b64decode(blob)))
    try:
        client.connect(
            address,
            port=node.ssh_port,
            username=node.user,
            key_filename=str(node.key_path),
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
            allow_agent=False,
            look_for_keys=False,
        )
        _, stdout, stderr = client.exec_command(command, timeout=60)
        out = stdout.read().decode()
        if stdout.channel.recv_exit_status() != 0:
            raise AssertionError(f"{command!r} on {address} failed: {stderr.read().decode()}")
        return out
    finally:
        client.close()


def _wait_listening(node: BedNode, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _from_node(node, "127.0.0.1", port) != "open":
        assert time.monotonic() < deadline, f"nothing listens on {node.name}:{port}"
        time.sleep(0.2)


# --------------------------------------------------------------- rules alone (no root)


def _instance(name: str, address: str, tags: list[str], network: str = "default") -> Rule:
    return {
        "name": name,
        "tags": {"items": tags},
        "networkInterfaces": [{"network": f"global/networks/{network}", "networkIP": address}],
    }


def test_firewall_semantics_follow_gce() -> None:
    a = _instance("a", "198.19.255.10", [SSH_TAG, CLUSTER_TAG])
    b = _instance("b", "198.19.255.11", [CLUSTER_TAG])
    c = _instance("c", "198.19.255.12", [])
    other_net = _instance("d", "198.19.255.13", [CLUSTER_TAG], network="other")
    instances = [a, b, c, other_net]
    rules: list[Rule] = [
        {"name": "ssh", "network": "global/networks/default", "sourceRanges": ["0.0.0.0/0"],
         "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "targetTags": [SSH_TAG]},
        {"name": "cluster", "network": "global/networks/default", "sourceTags": [CLUSTER_TAG],
         "targetTags": [CLUSTER_TAG], "allowed": [{"IPProtocol": "all"}]},
        {"name": "off", "network": "global/networks/default", "disabled": True,
         "sourceRanges": ["0.0.0.0/0"], "allowed": [{"IPProtocol": "all"}]},
        {"name": "out", "network": "global/networks/default", "direction": "EGRESS",
         "allowed": [{"IPProtocol": "all"}]},
    ]  # fmt: skip

    assert set(node_allows(a, instances, rules)) == {
        Allow("0.0.0.0/0", "tcp", ("22",)),
        Allow("198.19.255.10/32", "all"),
        Allow("198.19.255.11/32", "all"),  # b: tagged, same network; d is on another
    }
    assert node_allows(c, instances, rules) == []  # no rule targets it: all ingress denied
    assert node_allows(None, instances, rules) == []

    ruleset = iptables_ruleset([Allow("0.0.0.0/0", "tcp", ("22", "8000-9000"))])
    assert "-A GCE-INGRESS -s 0.0.0.0/0 -p tcp --dport 8000:9000 -j ACCEPT" in ruleset
    assert ruleset.index("-j ACCEPT") < ruleset.index("-A GCE-INGRESS -j DROP")


# ------------------------------------------------------------------ on the bed (root)


@pytest.fixture
def driver(gce_nodes: GceFake, gce_credentials: Path) -> Any:
    """libcloud's GCE driver on the fake with the nodes attached, and the product's SSH rule."""
    gce = make_driver(gce_nodes, gce_credentials)
    _ssh_rule(gce)
    return gce


@pytest.mark.bed
def test_instances_get_the_nodes_addresses_and_sshd_answers_with_its_own_key(
    driver: Any, clean_nodes: NodeBed, ssh_host: SshHost
) -> None:
    created = [_create(driver, f"bed-{i}", [SSH_TAG]) for i in range(len(clean_nodes))]

    for instance, node in zip(created, clean_nodes, strict=True):
        listed = driver.ex_get_node(instance.name, "us-east1-d")
        assert listed.public_ips == [node.external_address]
        assert listed.private_ips == [node.internal_address]
        command = "ip -o -4 addr show int0; hostname; sudo -n hostname 2>&1"
        out = _ssh_run(node, node.external_address, node.host_key, command)
        assert f" {node.internal_address}/" in out
        assert out.splitlines()[-2:] == [node.netns, node.netns]  # its own, and sudo is quiet
    keys = {node.host_key for node in clean_nodes}
    assert len(keys) == len(clean_nodes) and ssh_host.host_key not in keys
    # Another node's key is refused for this node's address: the keys really pin hosts.
    with pytest.raises(Exception, match=r"(?i)host key|not found in known_hosts"):
        _ssh_run(clean_nodes[0], clean_nodes[0].external_address, clean_nodes[1].host_key, "true")
    # The laptop has no way onto the internal network, and a packet for it cannot leave the
    # machine by its default route: the routing table says so before any connect is tried.
    route = subprocess.run(
        ["ip", "-o", "route", "get", clean_nodes[0].internal_address],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    assert route.returncode != 0 and "No route to host" in route.stderr, route.stdout
    began = time.monotonic()
    assert _from_laptop(clean_nodes[0].internal_address, 22) == "OSError"  # EHOSTUNREACH
    assert time.monotonic() - began < CONNECT_TIMEOUT  # refused at once, not timed out

    # One more instance than nodes: the zone is out of capacity, said in one line.
    with pytest.raises(Exception, match="nodes"):
        _create(driver, "bed-extra", [SSH_TAG])
    # Deleting an instance frees its node for the next one.
    driver.destroy_node(created[1])
    again = _create(driver, "bed-again", [SSH_TAG])
    assert again.public_ips == [clean_nodes[1].external_address]


@pytest.mark.bed
def test_docker_over_ssh_sees_only_its_own_nodes_engine(
    driver: Any, clean_nodes: NodeBed, jupyter_image: str
) -> None:
    for i in range(2):
        _create(driver, f"bed-{i}", [SSH_TAG])
    a, b = clean_nodes[0], clean_nodes[1]
    started = docker_in(a, "run", "-d", "--name", "orchbed-probe", jupyter_image, "sleep", "300")
    assert started.returncode == 0, started.stderr

    names = "sudo -n docker ps --format '{{.Names}}'"
    assert "orchbed-probe" in _ssh_run(a, a.external_address, a.host_key, names).split()
    assert "orchbed-probe" not in _ssh_run(b, b.external_address, b.host_key, names).split()
    assert "orchbed-probe" not in docker_in(b, "ps", "-a", "--format", "{{.Names}}").stdout


@pytest.mark.bed
def test_cluster_rule_admits_tagged_peers_on_internal_addresses_only(
    driver: Any, clean_nodes: NodeBed, jupyter_image: str
) -> None:
    _create(driver, "bed-a", [SSH_TAG, CLUSTER_TAG])
    _create(driver, "bed-b", [SSH_TAG, CLUSTER_TAG])
    _create(driver, "bed-c", [SSH_TAG])
    a, b, c = clean_nodes[0], clean_nodes[1], clean_nodes[2]
    server = docker_in(
        a, "run", "-d", "--network", "host", "--name", "orchbed-listener", jupyter_image,
        "python3", "-m", "http.server", str(PORT), "--bind", "0.0.0.0",
    )  # fmt: skip
    assert server.returncode == 0, server.stderr
    _wait_listening(a, PORT)

    # No rule for the port yet: GCE denies, so does the bed.
    assert _from_node(b, a.internal_address, PORT) == "TimeoutError"

    driver.ex_create_firewall(
        "orchestrate-cluster-bedtest",
        allowed=[{"IPProtocol": "all"}],
        source_tags=[CLUSTER_TAG],
        target_tags=[CLUSTER_TAG],
    )
    assert _from_node(b, a.internal_address, PORT) == "open"
    assert _from_node(c, a.internal_address, PORT) == "TimeoutError"  # not in the cluster
    assert _from_node(b, a.external_address, PORT) == "TimeoutError"  # tags match internal only
    assert _from_laptop(a.external_address, PORT) == "TimeoutError"
    assert _from_laptop(a.external_address, 22) == "open"  # the SSH rule still applies
    assert _from_node(b, a.internal_address, 22) == "open"  # sshd listens there too

    driver.ex_destroy_firewall(driver.ex_get_firewall("orchestrate-cluster-bedtest"))
    assert _from_node(b, a.internal_address, PORT) == "TimeoutError"

    # Deleting a's instance wipes its node, like a deleted VM: the container is gone.
    driver.destroy_node(driver.ex_get_node("bed-a", "us-east1-d"))
    assert docker_in(a, "ps", "-aq").stdout.strip() == ""
    assert _from_laptop(a.external_address, 22) == "TimeoutError"  # no instance: no ingress


@pytest.mark.bed
def test_stop_start_and_a_guest_poweroff_act_on_the_node_like_on_a_vm(
    driver: Any, clean_nodes: NodeBed, jupyter_image: str
) -> None:
    instance = _create(driver, "bed-a", [SSH_TAG])
    a = clean_nodes[0]
    for name, policy in (("orchbed-kept", "unless-stopped"), ("orchbed-once", "no")):
        run = docker_in(
            a, "run", "-d", "--restart", policy, "--name", name, jupyter_image, "sleep", "300"
        )
        assert run.returncode == 0, run.stderr
    running = ["ps", "--format", "{{.Names}}"]

    driver.ex_stop_node(instance)
    assert driver.ex_get_node("bed-a", "us-east1-d").state == "stopped"
    assert docker_in(a, *running).stdout.split() == []
    assert _from_laptop(a.external_address, 22) == "TimeoutError"  # a stopped VM answers nothing

    driver.ex_start_node(instance)
    started = driver.ex_get_node("bed-a", "us-east1-d")
    assert started.state == "running" and started.public_ips == [a.external_address]
    assert docker_in(a, *running).stdout.split() == ["orchbed-kept"]  # as dockerd does at boot

    # The guest powers itself off (what the autostop agent does): the instance stops, and
    # the machine the bed runs on does not.
    _ssh_run(a, a.external_address, a.host_key, "sudo -n poweroff")
    assert driver.ex_get_node("bed-a", "us-east1-d").state == "stopped"
    assert docker_in(a, *running).stdout.split() == []


# Runs inside a container: spends `cpu` seconds of CPU time (after its own start-up, which
# counts in process_time too), prints the wall time it took.
_BURN = """
import sys, time
cpu = float(sys.argv[1])
began, spent = time.monotonic(), time.process_time()
while time.process_time() - spent < cpu:
    pass
print(time.monotonic() - began)
"""


def _cpu_group(cgroup_text: str) -> str:
    """The cpu controller's group in a /proc/PID/cgroup text."""
    for line in cgroup_text.splitlines():
        _, controllers, group = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return group
    raise AssertionError(f"no cpu controller in {cgroup_text!r}")


@pytest.mark.bed
def test_a_cpu_quota_holds_each_nodes_processes_and_containers_and_goes_with_the_bed(
    ssh_host: SshHost, bed_cache: Path, jupyter_image: str
) -> None:
    """Every process of a node (sshd, dockerd, a command inside, a container) is in the
    node's own group, a container is held to the quota, and tear-down removes the groups."""
    from tests.bed.jupyter_image import rootfs_for_import
    from tests.bed.node_cpu import CGROUP_ROOT
    from tests.bed.nodes import start_nodes

    public_key = ssh_host.key_path.with_name(ssh_host.key_path.name + ".pub").read_text()
    with rootfs_for_import(bed_cache) as image:
        bed = start_nodes(
            2, cache_dir=bed_cache, user=ssh_host.user, key_path=ssh_host.key_path,
            authorized_key=public_key, image=image, cpu_cores=0.25,
        )  # fmt: skip
    names = []
    try:
        for node in bed:
            assert node.cpu is not None
            names.append(node.cpu.name)
            group = f"/{node.cpu.name}"
            assert (node.cpu.path / "cpu.cfs_quota_us").read_text().strip() == "25000"
            assert node.sshd is not None and node._dockerd is not None
            for pid in (node.sshd.pid, node._dockerd.pid):
                assert _cpu_group(Path(f"/proc/{pid}/cgroup").read_text()) == group
            assert _cpu_group(node.exec("cat /proc/self/cgroup").stdout) == group
        node = bed[0]
        burn = docker_in(node, "run", "--rm", "--entrypoint", "python3", jupyter_image,
                         "-c", _BURN, "0.5")  # fmt: skip
        assert burn.returncode == 0, burn.stderr
        # Half a second of CPU at a quarter of a core cannot take less than two seconds.
        assert float(burn.stdout) >= 1.8, burn.stdout
        assert node.cpu is not None and node.cpu.throttled_seconds() > 0.5
        inside = docker_in(node, "run", "--rm", "--entrypoint", "cat", jupyter_image,
                           "/proc/self/cgroup")  # fmt: skip
        assert _cpu_group(inside.stdout).startswith(f"/{node.cpu.name}/"), inside.stdout
    finally:
        bed.close()
    left = [str(h / n) for h in CGROUP_ROOT.iterdir() for n in names if (h / n).exists()]
    assert not left, f"groups left after tear-down: {left}"
