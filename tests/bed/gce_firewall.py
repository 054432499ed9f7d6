"""GCE's firewall semantics, as iptables rules for a bed node.

On GCE the firewall sits outside the VM: every VPC network denies all ingress unless an
INGRESS rule allows it, and a rule applies to an instance when the instance is on the rule's
network and carries one of its ``targetTags`` (or the rule has none).  A rule admits traffic
whose source is in one of its ``sourceRanges``, or comes from the *internal* address of an
instance (on the same network) carrying one of its ``sourceTags``.  Traffic from an
instance's external address never matches a source tag, so the bed, where a node that talks
to another node's external address does so from its own external address, behaves the same.
Disabled rules and EGRESS rules (egress is allowed by default) change nothing for ingress.
``denied`` rules and priorities are not modelled: the product creates none, and a rule the
bed cannot enforce would make a test pass that real GCE fails, so they are refused.

:func:`node_allows` computes what one instance admits from the fake's state; the bed's
nodes (``tests/bed/nodes.py``) load :func:`iptables_ruleset` of it into their namespaces.
Replies to connections a node opened itself pass (GCE's rules are stateful too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: The chain the node's ingress goes through (only on the node's two links).
CHAIN = "GCE-INGRESS"


class UnsupportedFirewall(ValueError):
    """A rule the bed cannot enforce faithfully."""


@dataclass(frozen=True)
class Allow:
    """Admit ``protocol`` (``"all"``, ``"tcp"``, ``"udp"``, ``"icmp"``, a number) on
    ``ports`` (``"22"``, ``"8000-9000"``; empty = every port) from ``source`` (a CIDR)."""

    source: str
    protocol: str
    ports: tuple[str, ...] = ()


def _last(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _network(instance: dict[str, Any]) -> str:
    nics = instance.get("networkInterfaces") or [{}]
    return _last(str(nics[0].get("network", "default")))


def _tags(instance: dict[str, Any]) -> set[str]:
    return set((instance.get("tags") or {}).get("items", []))


def _internal_address(instance: dict[str, Any]) -> str | None:
    nics = instance.get("networkInterfaces") or [{}]
    address = nics[0].get("networkIP")
    return str(address) if address else None


def node_allows(
    instance: dict[str, Any] | None,
    instances: Iterable[dict[str, Any]],
    firewalls: Iterable[dict[str, Any]],
) -> list[Allow]:
    """What ingress GCE admits to ``instance`` (None: a node without an instance: nothing)."""
    if instance is None:
        return []
    network = _network(instance)
    tags = _tags(instance)
    peers = [other for other in instances if _network(other) == network]
    allows: list[Allow] = []
    for rule in firewalls:
        if rule.get("disabled") or rule.get("direction", "INGRESS") != "INGRESS":
            continue
        if _last(str(rule.get("network", "default"))) != network:
            continue
        if rule.get("denied"):
            raise UnsupportedFirewall(f"firewall {rule.get('name')}: 'denied' is not modelled")
        targets = set(rule.get("targetTags") or [])
        if targets and not targets & tags:
            continue
        sources = list(rule.get("sourceRanges") or [])
        source_tags = set(rule.get("sourceTags") or [])
        for peer in peers:
            address = _internal_address(peer)
            if address and source_tags & _tags(peer):
                sources.append(f"{address}/32")
        for source in sources:
            for allowed in rule.get("allowed") or []:
                protocol = str(allowed.get("IPProtocol", "all")).lower()
                ports = tuple(str(p) for p in allowed.get("ports") or [])
                allows.append(Allow(source, protocol, ports))
    return allows


def _rule_lines(allow: Allow) -> list[str]:
    base = f"-A {CHAIN} -s {allow.source}"
    if allow.protocol == "all":
        return [f"{base} -j ACCEPT"]
    if not allow.ports:
        return [f"{base} -p {allow.protocol} -j ACCEPT"]
    if allow.protocol not in ("tcp", "udp", "sctp"):
        raise UnsupportedFirewall(f"ports on protocol {allow.protocol!r}")
    return [
        f"{base} -p {allow.protocol} --dport {port.replace('-', ':')} -j ACCEPT"
        for port in allow.ports
    ]


def iptables_ruleset(allows: Sequence[Allow], links: Sequence[str] = ("ext0", "int0")) -> str:
    """iptables-restore input for a node: ``allows`` on ``links``, everything else dropped.

    Dropped, not rejected: GCE answers nothing to a denied packet, so a client waits until
    its own timeout, and the tests bound theirs.
    """
    lines = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        f":{CHAIN} - [0:0]",
    ]
    lines += [f"-A INPUT -i {link} -j {CHAIN}" for link in links]
    lines.append(f"-A {CHAIN} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    for allow in allows:
        lines += _rule_lines(allow)
    lines += [f"-A {CHAIN} -j DROP", "COMMIT", ""]
    return "\n".join(lines)
