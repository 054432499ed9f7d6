"""Exposure: the notebook is reachable only through the tunnel, with the token.

- From a second network namespace (joined to ours by a veth with 198.18.0.0/15 addresses)
  neither Jupyter's host port, nor the tunnel's local port, nor the container's bridge
  address answers, while a control listener on our end of the veth does (so the probe is real).
- Through the tunnel, Jupyter answers 403 without the token.
- The only firewall rule the GCP provider made opens tcp:22, to orchestrate's tag.

ip_forward is never touched (the test checks it is unchanged), and the namespace goes away
with its veth after the test.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.bed.docker_engine import docker
from tests.bed.wan import socket_in_netns
from tests.reliability.support import launch_args, notebook_answers
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


@dataclass
class Outside:
    """A namespace with one veth to ours: `near` is our end's address, seen from `ns`."""

    ns: str
    near: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def outside() -> Iterator[Outside]:
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.fail("the exposure test needs root (network namespaces)")
    forward = IP_FORWARD.read_text()
    tag = secrets.token_hex(3)
    ns, ours, theirs = f"orch-exp-{tag}", f"ox{tag}a", f"ox{tag}b"
    # A random /30 of 198.18.0.0/16 (never routed), like the WAN bed's links; the
    # multi-node bed has 198.19.0.0/16.
    block = int(tag, 16) % (2**16 // 4)
    base = (198 << 24) | (18 << 16)
    near, far = (socket.inet_ntoa((base + block * 4 + i).to_bytes(4, "big")) for i in (1, 2))
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", ours, "type", "veth", "peer", "name", theirs, "netns", ns)
        _ip("addr", "add", f"{near}/30", "dev", ours)
        _ip("link", "set", ours, "up")
        _ip("-n", ns, "addr", "add", f"{far}/30", "dev", theirs)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", theirs, "up")
        # Everything the namespace sends goes to our end, so it can even try docker's bridge.
        _ip("-n", ns, "route", "add", "default", "via", near)
        yield Outside(ns, near)
    finally:
        subprocess.run(["ip", "link", "del", ours], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        assert IP_FORWARD.read_text() == forward, "ip_forward changed"


def _reachable(outside: Outside, address: str, port: int) -> bool:
    """Whether a TCP connect from the other namespace succeeds (1.5 s at most)."""
    sock = socket_in_netns(outside.ns)
    sock.settimeout(1.5)
    try:
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def test_notebook_is_reachable_only_through_the_tunnel_with_the_token(
    bed: Bed, outside: Outside
) -> None:
    launched = bed.cli(*launch_args())
    local_port, _ = notebook_answers(launched.stdout)  # 200 with the token, 403 without

    # The control listens on our end of the veth (an address we made), not on every address.
    with socket.create_server((outside.near, 0)) as control:
        assert _reachable(outside, outside.near, control.getsockname()[1]), "probe is broken"
    assert not _reachable(outside, outside.near, bed.remote_port), "Jupyter's host port"
    assert not _reachable(outside, outside.near, local_port), "the tunnel's local port"
    inspect = json.loads(docker("inspect", bed.container).stdout)[0]
    container_ip = inspect["NetworkSettings"]["IPAddress"]
    if container_ip:
        assert not _reachable(outside, container_ip, 8888), "the container's own address"

    # Whatever listens on the two ports listens on loopback only.
    listening = subprocess.run(
        ["ss", "-ltnH"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    for line in listening.splitlines():
        local = line.split()[3]
        if local.rsplit(":", 1)[1] in (str(bed.remote_port), str(local_port)):
            assert local.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]"), line

    # The GCP side: one rule, tcp:22 only, for orchestrate's tagged instances.
    rules = bed.gce.firewalls
    assert len(rules) == 1, rules
    rule = next(iter(rules.values()))
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}], rule
    assert rule.get("direction", "INGRESS") == "INGRESS"
    tags = bed.gce.instances["nb"]["tags"]["items"]
    assert rule["targetTags"] and set(rule["targetTags"]) <= set(tags)
