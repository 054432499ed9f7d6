"""Proof that the test bed's WAN link is what benchmarks and reliability tests assume.

A round trip on it really costs the configured delay (TCP sees it, not just
ICMP), bulk data crosses it, an in-process client can use it, and closing it
leaves nothing behind: no namespaces, no readers, ``ip_forward`` untouched.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bed import wan as wanmod
from tests.bed.fixtures_wan import WanSshHost

pytestmark = [pytest.mark.bed]

# Python start-up, scheduling on 2 cores and select() rounding; far below any
# round trip a benchmark would care about.
RTT_MARGIN_S = 0.030
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def _mb_per_s(result: dict[str, object]) -> float:
    return float(result["bytes"]) / float(result["seconds"]) / 1e6  # type: ignore[arg-type]


def test_round_trip_is_the_configured_delay(wan_link: wanmod.WanLink) -> None:
    result = wanmod.measure_round_trip(wan_link, rounds=20)
    delay_s = wan_link.delay_ms / 1000
    connect_s = float(result["connect_s"])  # type: ignore[arg-type]
    rtts = [float(x) for x in result["rtts_s"]]  # type: ignore[attr-defined]
    print(
        f"\nWAN {wan_link.delay_ms} ms: connect {connect_s * 1e3:.2f} ms, ping-pong "
        f"min {min(rtts) * 1e3:.2f} / median {statistics.median(rtts) * 1e3:.2f} / "
        f"max {max(rtts) * 1e3:.2f} ms"
    )
    # connect() returns after SYN -> SYN/ACK: one full round trip.
    assert delay_s <= connect_s < delay_s + RTT_MARGIN_S
    assert len(rtts) == 20
    assert min(rtts) >= delay_s
    assert statistics.median(rtts) < delay_s + RTT_MARGIN_S
    wan_link.check()


@pytest.mark.slow
@pytest.mark.parametrize("wan_link", [50, 0], indirect=True, ids=["50ms", "0ms"])
def test_bulk_transfer_far_to_near(wan_link: wanmod.WanLink) -> None:
    nbytes = 50 * 1000 * 1000
    cpu_before = wan_link.reader_cpu_seconds()
    started = time.monotonic()
    result = wanmod.measure_bulk(wan_link, nbytes)
    elapsed = time.monotonic() - started
    cpu_after = wan_link.reader_cpu_seconds()
    cpu = {ns: round(cpu_after[ns] - cpu_before.get(ns, 0.0), 3) for ns in cpu_after}
    print(
        f"\nWAN {wan_link.delay_ms} ms: {nbytes / 1e6:.0f} MB far->near in "
        f"{float(result['seconds']):.3f} s = {_mb_per_s(result):.0f} MB/s "  # type: ignore[arg-type]
        f"(incl. slow start); reader CPU s over {elapsed:.2f} s: {cpu or 'no readers'}"
    )
    assert result["bytes"] == nbytes
    # The connection's own handshake still shows the delay.
    assert float(result["connect_s"]) >= wan_link.delay_ms / 1000  # type: ignore[arg-type]
    wan_link.check()


def test_in_process_socket_crosses_the_link(wan_link: wanmod.WanLink) -> None:
    """near_socket() gives this process (paramiko, the tunnel) a seat on the near side."""
    listener = wan_link.far_socket()
    with listener:
        listener.bind((wan_link.far_addr, 0))
        listener.listen(1)
        listener.settimeout(10)
        port = listener.getsockname()[1]
        started = time.monotonic()
        client = wan_link.connect_near(port)
        connect_s = time.monotonic() - started
        with client:
            server, peer = listener.accept()
            with server:
                assert peer[0] == wan_link.near_addr
                client.sendall(b"ping")
                server.settimeout(10)
                assert server.recv(4) == b"ping"
    assert connect_s >= wan_link.delay_ms / 1000


def test_namespaces_have_no_way_out(wan_link: wanmod.WanLink) -> None:
    for cmd in (wan_link.exec_near, wan_link.exec_far):
        routes = subprocess.run(
            cmd(["ip", "-4", "route", "show"]),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        assert "default" not in routes
        assert all(line.startswith("198.1") for line in routes.splitlines() if line)
        forward = subprocess.run(
            cmd(["cat", "/proc/sys/net/ipv4/ip_forward"]),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        assert forward == "0"


def test_close_removes_everything(wan_link_factory: Callable[..., wanmod.WanLink]) -> None:
    forward_before = IP_FORWARD.read_text()
    link = wan_link_factory(20, name_prefix="orchtest")
    pids = list(link.reader_pids.values())
    assert len(pids) == 2
    assert wanmod.netns_exists(link.near_ns) and wanmod.netns_exists(link.far_ns)
    link.close()
    link.close()  # idempotent
    assert not wanmod.netns_exists(link.near_ns)
    assert not wanmod.netns_exists(link.far_ns)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()
    assert "accepted" in link.reader_log(link.near_ns)
    assert link.workdir is not None and not link.workdir.exists()
    assert IP_FORWARD.read_text() == forward_before
    assert IP_FORWARD.read_text().strip() != "1"


def test_half_built_link_is_torn_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure after the namespaces exist must not leave them behind."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made: list[str] = []
    real_run = wanmod._run

    def failing_run(argv: list[str], *, timeout: float = 30) -> str:
        if argv[:3] == ["ip", "netns", "add"]:
            made.append(argv[3])
        if "iptables" in argv:
            raise wanmod.WanLinkError("injected failure")
        return real_run(argv, timeout=timeout)

    monkeypatch.setattr(wanmod, "_run", failing_run)
    with pytest.raises(wanmod.WanLinkError, match="injected"):
        wanmod.wan_link(10, name_prefix="orchfail")
    assert len(made) == 2
    assert not any(wanmod.netns_exists(ns) for ns in made)


def test_ssh_login_over_the_link(wan_ssh_host: WanSshHost) -> None:
    paramiko = pytest.importorskip("paramiko")
    link = wan_ssh_host.link
    started = time.monotonic()
    sock = wan_ssh_host.connect()
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            wan_ssh_host.address,
            port=wan_ssh_host.port,
            username=wan_ssh_host.user,
            key_filename=str(wan_ssh_host.key_path),
            sock=sock,
            look_for_keys=False,
            allow_agent=False,
            timeout=20,
        )
        _, stdout, _ = client.exec_command("echo over-the-wan", timeout=20)
        assert stdout.read().strip() == b"over-the-wan"
    finally:
        client.close()
    elapsed = time.monotonic() - started
    print(f"\nSSH login + one command over {link.delay_ms} ms WAN: {elapsed:.2f} s")
    # Key exchange, auth and a channel take several round trips.
    assert elapsed >= 3 * link.delay_ms / 1000
