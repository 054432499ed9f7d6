"""The existing-host provider: ``--host`` parsing, the plan, and its life cycle against the
test bed's real sshd (it must never power off or delete the user's machine)."""

from __future__ import annotations

import getpass
import socket
import threading
from collections.abc import Iterator

import pytest
from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import ProfileError, ProviderError
from orchestrate.core.api.provider import LaunchSpec
from orchestrate.core.cloud.failover import create_with_failover
from orchestrate.plugins.providers.ssh import SshOptions, SshProvider
from orchestrate.plugins.providers.ssh.options import parse_host

WHERE = "orchestrate.toml:7: [profiles.box.ssh]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu@192.0.2.10", ("ubuntu", "192.0.2.10", 22)),
        ("me@box.lan:2222", ("me", "box.lan", 2222)),
        ("me@[2001:db8::5]:2200", ("me", "2001:db8::5", 2200)),
        ("me@2001:db8::5", ("me", "2001:db8::5", 22)),
        ("first.last@gpu-01.example.org.", ("first.last", "gpu-01.example.org", 22)),
        ("192.0.2.10:22", (getpass.getuser(), "192.0.2.10", 22)),
    ],
)
def test_host_is_written_as_on_an_ssh_command_line(text: str, expected: tuple) -> None:
    assert parse_host(text, "--host") == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "non-empty"),
        ("me@", "not a host name"),
        ("me@box:0", "1-65535"),
        ("me@box:ssh", "1-65535"),
        ("me@box:", "1-65535"),
        ("bad user@box", "not a login name"),
        ("me@[2001:db8::5", "unclosed"),
        ("me@[192.0.2.1]:22", "only for IPv6"),
        ("me@999.1.1.1", "not a host name"),
        ("me@under_score.lan", "not a host name"),
    ],
)
def test_bad_hosts_say_how_to_write_one(text: str, fragment: str) -> None:
    with pytest.raises(ProfileError) as caught:
        parse_host(text, "--host")
    assert fragment in caught.value.line() and "user@address[:port]" in caught.value.line()


def test_table_and_flags() -> None:
    provider = SshProvider()
    options = provider.validate_options({"host": "me@box:2222", "gpu": "rtx-4090:2"}, WHERE)
    assert options == SshOptions("me", "box", 2222, "rtx-4090", 2)
    assert provider.gpu_request(options) == p.GpuRequest("rtx-4090", 2)
    assert options.ssh_user == "me"
    flagged = provider.apply_overrides(options, {"host": "root@10.0.0.5", "gpu": "none"})
    assert (flagged.user, flagged.address, flagged.port) == ("root", "10.0.0.5", 22)
    assert provider.gpu_request(flagged) is None
    assert provider.redacted_options(flagged) == {"host": "root@10.0.0.5:22", "gpu": "none"}
    empty = provider.validate_options({}, WHERE)
    assert provider.gpu_request(empty) is None and empty.address is None
    with pytest.raises(ProfileError, match="does not take --zone"):
        provider.apply_overrides(empty, {"zone": "us-east1-d"})
    with pytest.raises(ProfileError, match="unknown key 'zones'"):
        provider.validate_options({"zones": ["a"]}, WHERE)
    with pytest.raises(ProfileError, match=r"\[profiles.box.ssh\]: host"):
        provider.validate_options({"host": 22}, WHERE)


def test_a_launch_without_a_host_says_how_to_give_one() -> None:
    provider = SshProvider()
    spec = LaunchSpec("nb", "ssh", provider.validate_options({}, WHERE), "me", "ssh-ed25519 AAAA")
    for call in (provider.plan, provider.preflight, provider.candidate_zones):
        with pytest.raises(ProfileError) as caught:
            call(spec)
        assert "--host user@address[:port]" in caught.value.line()


def test_plan_sends_nothing_to_any_cloud() -> None:
    provider = SshProvider()
    options = provider.validate_options({"host": "me@[2001:db8::5]:2200"}, WHERE)
    (request,) = provider.plan(LaunchSpec("nb", "ssh", options, "me", "ssh-ed25519 AAAA"))
    assert (request.method, request.path) == ("SSH", "me@[2001:db8::5]:2200")
    assert request.body is not None and "nothing" in request.body["creates"]
    assert "container" in request.body["stop"] and "files stay" in request.body["down"]
    assert SshProvider.stops_container_only is True
    assert p.Provider.stops_container_only is False


@pytest.fixture
def not_ssh() -> Iterator[int]:
    """A loopback port that answers, but not with an SSH banner."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    port = server.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    done.set()
    thread.join(timeout=5)
    server.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_and_non_ssh_hosts_fail_fast(not_ssh: int) -> None:
    provider = SshProvider(connect_timeout_s=2)
    for port, fragment in ((_closed_port(), "refused"), (not_ssh, "not an ssh server")):
        options = provider.validate_options({"host": f"me@127.0.0.1:{port}"}, WHERE)
        with pytest.raises(ProviderError) as caught:
            provider.preflight(LaunchSpec("nb", "ssh", options, "me", "ssh-ed25519 AAAA"))
        assert fragment in caught.value.line().lower()
        assert f"me@127.0.0.1:{port}" in caught.value.line()


@pytest.mark.bed
def test_life_cycle_against_the_bed_sshd(ssh_host) -> None:  # type: ignore[no-untyped-def]
    provider = SshProvider()
    host = f"{ssh_host.user}@{ssh_host.address}:{ssh_host.port}"
    options = provider.apply_overrides(provider.validate_options({}, WHERE), {"host": host})
    spec = LaunchSpec("box", "ssh", options, options.ssh_user, "ssh-ed25519 AAAA")
    events: list[str] = []
    record = create_with_failover(
        provider, spec, lambda kind, message, data: events.append(message)
    )
    assert events == [f"creating in {host}", f"created in {host}"]
    assert record.status == p.RUNNING and record.cloud_id == f"ssh://{host}"
    assert (record.address, record.ssh_port, record.ssh_user) == (
        ssh_host.address,
        ssh_host.port,
        ssh_host.user,
    )
    assert provider.get(record).status == p.RUNNING
    # stop and destroy touch nothing: the sshd (the "machine") keeps running
    provider.stop(record)
    provider.destroy(record)
    assert ssh_host.sshd.running and provider.get(record).status == p.RUNNING
    assert provider.start(record).status == p.RUNNING
    assert provider.find(spec) is None

    # A machine that is off is not gone: UNKNOWN, never NotFound, and start says so.
    off = p.InstanceRecord(**{**record.__dict__, "ssh_port": _closed_port()})
    assert provider.get(off).status == p.UNKNOWN
    with pytest.raises(ProviderError, match="cannot use ssh host"):
        provider.start(off)


@pytest.mark.bed
def test_the_session_logs_in_with_what_the_record_says(ssh_host) -> None:  # type: ignore[no-untyped-def]
    """The record is all core needs to reach the host: a real login with the bed's key."""
    from orchestrate.core.ssh.session import Session

    provider = SshProvider()
    options = provider.validate_options(
        {"host": f"{ssh_host.user}@{ssh_host.address}:{ssh_host.port}"}, WHERE
    )
    record = provider.create(LaunchSpec("box", "ssh", options, ssh_host.user, "k"), "")
    assert record.address is not None
    session = Session.connect(
        record.address,
        record.ssh_port,
        record.ssh_user,
        ssh_host.key_path,
        pinned_host_key=ssh_host.host_key,
        name="box",
    )
    try:
        assert session.run("id -un").stdout.strip() == ssh_host.user
    finally:
        session.close()
