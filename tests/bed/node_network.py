"""A node bed's network: the namespaces, bridges and links, and the /24s they use.

See ``tests/bed/nodes.py`` for the design (external and internal bridges, the laptop's one
link, the ``unreachable`` route for the internal /24, ``ip_forward`` left alone).
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from typing import TYPE_CHECKING

from tests.bed.node_procs import NodeBedError, run_setup

if TYPE_CHECKING:
    from tests.bed.nodes import NodeBed

#: The half of 198.18.0.0/15 the WAN bed leaves alone.
NODE_NET = ipaddress.IPv4Network("198.19.0.0/16")


#: Host part of the laptop's address on the external bridge, and of node 0's addresses.
LAPTOP_HOST = 1


FIRST_NODE_HOST = 10


EXTERNAL_IF = "ext0"


INTERNAL_IF = "int0"


def _used_ipv4_networks() -> list[ipaddress.IPv4Network]:
    """Networks of the root namespace's IPv4 addresses and routes (to pick /24s nobody uses)."""
    nets = []
    for line in run_setup(["ip", "-o", "-4", "addr", "show"]).splitlines():
        words = line.split()
        if "inet" in words:
            nets.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]).network)
    for line in run_setup(["ip", "-4", "route", "show"]).splitlines():
        words = line.split()
        destination = words[1] if words[0] in ("unreachable", "blackhole", "prohibit") else words[0]
        if destination != "default":
            nets.append(ipaddress.IPv4Network(destination, strict=False))
    return nets


def pick_nets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """Two /24s of :data:`NODE_NET` no address or route of the root namespace uses."""
    used = _used_ipv4_networks()
    free = [n for n in NODE_NET.subnets(new_prefix=24) if not any(n.overlaps(u) for u in used)]
    if len(free) < 2:
        raise NodeBedError(f"no two free /24s left in {NODE_NET} for a node bed")
    external = free.pop(secrets.randbelow(len(free)))
    return external, free[secrets.randbelow(len(free))]


def drop_unreachable_route(network: str) -> None:
    subprocess.run(
        ["ip", "route", "delete", "unreachable", network], capture_output=True, timeout=30
    )


def _netns(bed: NodeBed, name: str) -> str:
    run_setup(["ip", "netns", "add", name])
    bed._namespaces.append(name)
    # IPv6 off keeps the links quiet; nothing here uses it.
    run_setup(
        [
            "ip", "netns", "exec", name, "sysctl", "-q", "-w",
            "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
        ]
    )  # fmt: skip
    run_setup(["ip", "-n", name, "link", "set", "lo", "up"])
    return name


def build_network(bed: NodeBed, count: int) -> list[tuple[str, str, str]]:
    """Namespaces, bridges and links; returns (netns, external, internal) per node."""
    net = _netns(bed, bed.net_ns)
    for bridge in ("bext", "bint"):
        run_setup(["ip", "-n", net, "link", "add", bridge, "type", "bridge"])
        run_setup(["ip", "-n", net, "link", "set", bridge, "up"])
    # The laptop's end is the only link in the root namespace.
    run_setup(
        ["ip", "link", "add", bed.laptop_if, "type", "veth", "peer", "name", "up0", "netns", net]
    )
    run_setup(["ip", "-n", net, "link", "set", "up0", "master", "bext", "up"])
    prefix = bed.external_net.prefixlen
    run_setup(["ip", "addr", "add", f"{bed.laptop_address}/{prefix}", "dev", bed.laptop_if])
    run_setup(["ip", "link", "set", bed.laptop_if, "up"])
    run_setup(["ip", "route", "add", "unreachable", str(bed.internal_net)])
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
            run_setup(["ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer,
                  "netns", net])  # fmt: skip
            run_setup(["ip", "-n", net, "link", "set", peer, "master", bridge, "up"])
            run_setup(["ip", "-n", ns, "addr", "add", f"{address}/{net_prefix}", "dev", ifname])
            run_setup(["ip", "-n", ns, "link", "set", ifname, "up"])
        out.append((ns, external, internal))
    return out
