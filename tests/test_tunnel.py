"""The tunnel against the real thing: OpenSSH's sshd from the bed and an HTTP server behind it.

Nothing is timed here except generous upper bounds that turn a hang into a failure: speed is
the benchmark's business (bench/tunnel_bench.py), a timing threshold in a test is a flaky test.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import http.server
import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from orchestrate.core.api.errors import HostError, UsageError
from orchestrate.core.ssh.ports import bind_listener, is_port_free
from orchestrate.core.ssh.tunnel import (
    DEFAULT_WINDOW_SIZE,
    LAN_WINDOW_SIZE,
    Backoff,
    ReadAheadSocket,
    Tunnel,
    TunnelStats,
    TunnelTuning,
    as_transport,
    live_line,
    open_default_tunnel,
    run_foreground,
)

from tests.bed.fixtures_host import SshHost

MB = 1_000_000
WAIT_S = 15.0  # upper bound for anything that should happen "at once"


# -- the remote end: a real HTTP server on loopback, as Jupyter would be -------------------


def _blob(n: int) -> bytes:
    """n deterministic, incompressible-looking bytes (the same for server and test)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:n])


BLOB = _blob(5 * MB)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = BLOB if self.path == "/blob" else b"pong\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        digest = hashlib.sha256()
        left = length
        while left:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        body = json.dumps({"sha256": digest.hexdigest(), "length": length - left}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """A threaded HTTP server on 127.0.0.1: the forward's remote target."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=WAIT_S)


# -- the SSH side ---------------------------------------------------------------------------


def _connect(host: SshHost) -> Any:
    """An authenticated paramiko Transport to the bed's sshd: our own socket, key auth."""
    import paramiko

    sock = socket.create_connection((host.address, host.port), timeout=WAIT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = paramiko.Transport(sock)
    transport.start_client(timeout=WAIT_S)
    kind, blob = host.host_key.split()[:2]
    expected = paramiko.PKey.from_type_string(kind, base64.b64decode(blob))
    assert transport.get_remote_server_key() == expected, "host key differs from the bed's"
    transport.auth_publickey(
        host.user, paramiko.Ed25519Key.from_private_key_file(str(host.key_path))
    )
    return transport


@pytest.fixture
def transport(ssh_host: SshHost) -> Iterator[Any]:
    t = _connect(ssh_host)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def make_tunnel() -> Iterator[Callable[..., Tunnel]]:
    """Start tunnels that are closed after the test whatever happens."""
    made: list[Tunnel] = []

    def make(*args: Any, cls: type[Tunnel] = Tunnel, **kwargs: Any) -> Tunnel:
        tunnel = cls(*args, **kwargs).start()
        made.append(tunnel)
        return tunnel

    yield make
    for tunnel in made:
        tunnel.close()


def _get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        assert response.status == 200
        return response.read()
    finally:
        conn.close()


def _post(port: int, body: bytes) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        conn.request("POST", "/hash", body=body)
        response = conn.getresponse()
        assert response.status == 200
        result: dict[str, Any] = json.loads(response.read())
        return result
    finally:
        conn.close()


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- data path ----------------------------------------------------------------------------


@pytest.mark.bed
@pytest.mark.parametrize("pump", ["threads", "select"])
def test_bytes_round_trip_both_ways(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel], pump: str
) -> None:
    """Core's threads pump, and the select() pump the benchmark compares it with."""
    if pump == "threads":
        tunnel = make_tunnel(transport, 0, "127.0.0.1", http_port)
    else:
        from bench.tunnel_variants import BenchTunnel

        tunnel = make_tunnel(transport, 0, "127.0.0.1", http_port, pump=pump, cls=BenchTunnel)

    down = _get(tunnel.local_port, "/blob")
    assert hashlib.sha256(down).hexdigest() == hashlib.sha256(BLOB).hexdigest()

    upload = BLOB[::-1]
    answer = _post(tunnel.local_port, upload)
    assert answer == {"sha256": hashlib.sha256(upload).hexdigest(), "length": len(upload)}

    _wait_for(lambda: tunnel.stats().active == 0, "both connections to finish")
    stats = tunnel.stats()
    assert stats.bytes_down >= len(BLOB)
    assert stats.bytes_up >= len(upload)
    assert stats.connections == 2
    assert stats.state == "up"


@pytest.mark.bed
def test_many_connections_at_once(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    """A notebook page opens a dozen connections together; each gets its own channel."""
    tunnel = make_tunnel(transport, 0, "127.0.0.1", http_port)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            results.append(_get(tunnel.local_port, "/ping"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert not errors
    assert results == [b"pong\n"] * 16


@pytest.mark.bed
def test_remote_refusal_closes_the_local_socket(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    """Nothing listens on the remote port (Jupyter not up yet): the browser must see a close,
    not a connection that hangs with nothing behind it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # free once closed: nothing listens there
    tunnel = make_tunnel(transport, 0, "127.0.0.1", dead_port)

    with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=WAIT_S) as client:
        client.settimeout(WAIT_S)  # a hang fails the test instead of blocking it
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = client.recv(1024)
        except ConnectionResetError:
            data = b""
        assert data == b"", "the local socket should be closed, not answered"

    assert tunnel.stats().refused == 1
    assert tunnel.stats().state == "up", "a refusal must not look like a dead link"
    # The tunnel itself is fine: a forward to a live port on the same transport works.
    with Tunnel(transport, 0, "127.0.0.1", http_port) as other:
        assert _get(other.local_port, "/ping") == b"pong\n"


class _TcpServer:
    """A raw TCP server on 127.0.0.1 running ``handle(conn)`` per connection in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._handle = handle
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._handle(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=WAIT_S)


@pytest.mark.bed
def test_half_close_reaches_the_remote(transport: Any, make_tunnel: Callable[..., Tunnel]) -> None:
    """A client that sends, shuts down its write side and then reads (``nc -N``) gets its
    answer: our EOF must reach the server, whatever the ordering tricks around it."""

    def hash_until_eof(conn: socket.socket) -> None:
        digest = hashlib.sha256()
        while chunk := conn.recv(65536):
            digest.update(chunk)
        conn.sendall(digest.hexdigest().encode())

    server = _TcpServer(hash_until_eof)
    try:
        tunnel = make_tunnel(transport, 0, "127.0.0.1", server.port)
        for _ in range(3):  # back to back: the EOF of one meets the open of the next
            with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=WAIT_S) as c:
                c.settimeout(WAIT_S)
                c.sendall(BLOB[:100_000])
                c.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := c.recv(4096):
                    answer += chunk
            assert answer.decode() == hashlib.sha256(BLOB[:100_000]).hexdigest()
    finally:
        server.close()


@pytest.mark.bed
def test_a_spare_the_remote_closed_is_not_handed_out(
    transport: Any, make_tunnel: Callable[..., Tunnel]
) -> None:
    """The pre-opened channel may be closed by the remote (idle timeout, server restart);
    the next connection must then get a fresh channel, not a dead one."""

    def impatient_pong(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        try:
            request = conn.recv(100)
        except TimeoutError:
            return  # idle: hang up, as a server with a short idle timeout does
        if request:
            conn.sendall(b"pong")

    server = _TcpServer(impatient_pong)
    try:
        tunnel = make_tunnel(
            transport, 0, "127.0.0.1", server.port, tuning=TunnelTuning(prewarm=True)
        )
        _wait_for(lambda: server.accepted >= 1, "the spare to be opened")
        for _ in range(3):
            time.sleep(0.4)  # longer than the server's patience: the spare is dead by now
            with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=WAIT_S) as c:
                c.settimeout(WAIT_S)
                c.sendall(b"ping")
                assert c.recv(100) == b"pong"
        assert tunnel.stats().refused == 0
    finally:
        server.close()


@pytest.mark.bed
def test_no_spare_on_a_fast_link_by_default(
    transport: Any, make_tunnel: Callable[..., Tunnel]
) -> None:
    """On loopback a pre-opened channel would save nothing: none is opened."""
    server = _TcpServer(lambda conn: conn.sendall(conn.recv(100)))
    try:
        tunnel = make_tunnel(transport, 0, "127.0.0.1", server.port)
        assert tunnel.warm(WAIT_S)  # set once the spare thread decided: no spare here
        assert server.accepted == 0
    finally:
        server.close()


@pytest.mark.bed
def test_without_prewarm_nothing_is_opened_ahead(
    transport: Any, make_tunnel: Callable[..., Tunnel]
) -> None:
    server = _TcpServer(lambda conn: conn.sendall(conn.recv(100)))
    try:
        tunnel = make_tunnel(
            transport, 0, "127.0.0.1", server.port, tuning=TunnelTuning(prewarm=False)
        )
        assert tunnel.warm(WAIT_S)  # start-up done, and without prewarm no spare thread runs
        assert server.accepted == 0
        with socket.create_connection(("127.0.0.1", tunnel.local_port), timeout=WAIT_S) as c:
            c.settimeout(WAIT_S)
            c.sendall(b"echo")
            assert c.recv(100) == b"echo"
        assert server.accepted == 1
    finally:
        server.close()


@pytest.mark.bed
def test_window_follows_the_link_unless_given(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    """A timed round trip picks the window, before the first connection needs it."""
    auto = make_tunnel(transport, 0, "127.0.0.1", http_port)
    assert auto.channel_window() in (DEFAULT_WINDOW_SIZE, LAN_WINDOW_SIZE)
    assert auto.warm(WAIT_S)
    assert auto.channel_window() == LAN_WINDOW_SIZE  # loopback counts as fast
    assert _get(auto.local_port, "/ping") == b"pong\n"
    fixed = make_tunnel(
        transport, 0, "127.0.0.1", http_port, tuning=TunnelTuning(window_size=3_000_000)
    )
    assert _get(fixed.local_port, "/ping") == b"pong\n"
    assert fixed.channel_window() == 3_000_000


@pytest.mark.bed
def test_rekeys_to_aes_gcm_once_and_keeps_working(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    assert not transport.remote_cipher.endswith("-gcm@openssh.com")  # paramiko's default
    tunnel = make_tunnel(transport, 0, "127.0.0.1", http_port)
    _wait_for(lambda: transport.remote_cipher.endswith("-gcm@openssh.com"), "the re-key")
    down = _get(tunnel.local_port, "/blob")
    assert hashlib.sha256(down).digest() == hashlib.sha256(BLOB).digest()


@pytest.mark.bed
def test_over_a_session_that_ran_a_command_the_tunnel_adds_no_exchange(
    ssh_host: SshHost, http_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """core's Session asks for AES-GCM in its first key exchange, so the tunnel has no
    re-key to do; and once a command ran on it (a launch's probe), sshd has TCP_NODELAY and
    the command's channel open timed the link, so the tunnel neither nudges sshd nor times
    the link again: none of its start-up exchanges lands on a launch's path."""
    from orchestrate.core.ssh import tunnel_link
    from orchestrate.core.ssh.session import Session

    class Counting(tunnel_link.LinkCare):
        nudges = 0

        def nudge_sshd(self, transport: Any) -> None:
            Counting.nudges += 1
            super().nudge_sshd(transport)

    timed: list[Any] = []
    original = tunnel_link.round_trip_s

    def counting_round_trip(transport: Any, probes: int = 2) -> float:
        timed.append(transport)
        return original(transport, probes)

    session = Session.connect(
        ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_path,
        pinned_host_key=ssh_host.host_key, deadline_s=WAIT_S,
    )  # fmt: skip
    tunnel = None
    try:
        offered = session.transport.get_security_options().ciphers
        if any(c.endswith("-gcm@openssh.com") for c in offered):  # paramiko 3.5 and later
            assert session.transport.remote_cipher.endswith("-gcm@openssh.com")
        assert session.run("true").rc == 0
        tunnel = Tunnel(session, 0, "127.0.0.1", http_port)
        tunnel.link = Counting(tunnel.tuning)
        monkeypatch.setattr(tunnel_link, "round_trip_s", counting_round_trip)
        tunnel.start()
        assert tunnel.warm(WAIT_S)
        assert Counting.nudges == 0 and timed == []
        assert tunnel.channel_window() == LAN_WINDOW_SIZE, "loopback, from the timed open"
        assert _get(tunnel.local_port, "/ping") == b"pong\n"
    finally:
        if tunnel is not None:
            tunnel.close()
        session.close()


@pytest.mark.bed
def test_no_rekey_when_asked_not_to(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    cipher = transport.remote_cipher
    tunnel = make_tunnel(
        transport, 0, "127.0.0.1", http_port, tuning=TunnelTuning(prefer_aead=False)
    )
    assert tunnel.warm(WAIT_S)
    assert _get(tunnel.local_port, "/ping") == b"pong\n"
    assert transport.remote_cipher == cipher


def test_read_ahead_socket_keeps_order_and_sizes() -> None:
    left, right = socket.socketpair()
    with left, right:
        wrapped = ReadAheadSocket(right, chunk=1024)
        payload = bytes(range(256)) * 40  # 10 240 bytes
        left.sendall(payload)
        got = b""
        sizes = [16, 1, 700, 4000, 3, 5520]
        for size in sizes:
            part = b""
            while len(part) < size:
                chunk = wrapped.recv(size - len(part))
                assert chunk, "no EOF expected"
                assert len(chunk) <= size - len(part)
                part += chunk
            got += part
        assert got == payload
        left.close()
        assert wrapped.recv(10) == b""
        assert wrapped.fileno() == right.fileno()  # everything else is the socket's own


@pytest.mark.bed
def test_read_ahead_is_installed_under_paramiko(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    tunnel = make_tunnel(transport, 0, "127.0.0.1", http_port)
    assert isinstance(transport.packetizer._Packetizer__socket, ReadAheadSocket)
    assert _get(tunnel.local_port, "/ping") == b"pong\n"


# -- the local port -----------------------------------------------------------------------


def test_busy_port_moves_to_the_next_free_one() -> None:
    with bind_listener("127.0.0.1", 0, explicit=True) as busy:
        port = busy.getsockname()[1]
        with bind_listener("127.0.0.1", port, explicit=False) as moved:
            got = moved.getsockname()[1]
    assert port < got < port + 20


def test_busy_explicit_port_is_a_usage_error() -> None:
    with bind_listener("127.0.0.1", 0, explicit=True) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(UsageError) as info:
            bind_listener("127.0.0.1", port, explicit=True)
        assert not is_port_free("127.0.0.1", port)
    line = info.value.line()
    assert f"local port {port} is busy" in line
    assert "pass another --port or free it" in line
    assert info.value.exit_code == 2


@pytest.mark.bed
def test_tunnel_on_a_busy_port(
    transport: Any, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    with bind_listener("127.0.0.1", 0, explicit=True) as busy:
        port = busy.getsockname()[1]
        moved = make_tunnel(transport, port, "127.0.0.1", http_port)
        assert moved.local_port != port
        assert _get(moved.local_port, "/ping") == b"pong\n"
        with pytest.raises(UsageError, match=f"local port {port} is busy"):
            Tunnel(transport, port, "127.0.0.1", http_port, port_explicit=True).start()


@pytest.mark.bed
def test_close_frees_the_port_and_leaves_the_session(transport: Any, http_port: int) -> None:
    tunnel = Tunnel(transport, 0, "127.0.0.1", http_port).start()
    port = tunnel.local_port
    # An idle keep-alive connection is open when the user hits Ctrl-C.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    conn.request("GET", "/ping")
    assert conn.getresponse().read() == b"pong\n"

    tunnel.close()
    tunnel.close()  # idempotent

    assert tunnel.wait(0)
    assert tunnel.stats().state == "closed"
    assert is_port_free("127.0.0.1", port)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()
    assert conn.sock is not None
    conn.sock.settimeout(WAIT_S)
    assert conn.sock.recv(1) == b"", "open connections end with the tunnel"
    conn.close()
    # Only the tunnel closed: the session (and so the instance) is untouched.
    assert transport.is_active()
    chan = transport.open_channel("direct-tcpip", ("127.0.0.1", http_port), ("127.0.0.1", 0))
    chan.close()


# -- reconnecting ---------------------------------------------------------------------------


@pytest.mark.bed
def test_reconnects_after_the_transport_dies(
    ssh_host: SshHost, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    first = _connect(ssh_host)
    calls: list[Any] = []

    def reconnect() -> Any:
        fresh = _connect(ssh_host)
        calls.append(fresh)
        return fresh

    tunnel = make_tunnel(
        first, 0, "127.0.0.1", http_port, reconnect=reconnect,
        tuning=TunnelTuning(backoff=Backoff(attempts=5, first_s=0.1, max_s=0.5)),
    )  # fmt: skip
    assert _get(tunnel.local_port, "/ping") == b"pong\n"

    first.close()  # the link drops under the tunnel
    _wait_for(lambda: tunnel.stats().reconnects == 1, "the reconnect")

    assert _get(tunnel.local_port, "/ping") == b"pong\n"
    stats = tunnel.stats()
    assert stats.reconnects == 1
    assert stats.state == "up"
    assert len(calls) == 1
    assert tunnel.transport is calls[0]
    tunnel.close()
    for transport in calls:
        transport.close()


@pytest.mark.bed
def test_reconnect_retries_with_backoff_then_works(
    ssh_host: SshHost, http_port: int, make_tunnel: Callable[..., Tunnel]
) -> None:
    """The first attempts fail (host still rebooting); the tunnel keeps trying, bounded."""
    first = _connect(ssh_host)
    attempts: list[float] = []
    made: list[Any] = []

    def reconnect() -> Any:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise HostError("connection refused")
        made.append(_connect(ssh_host))
        return made[-1]

    tunnel = make_tunnel(
        first, 0, "127.0.0.1", http_port, reconnect=reconnect,
        tuning=TunnelTuning(backoff=Backoff(attempts=5, first_s=0.05, max_s=0.2)),
    )  # fmt: skip
    first.close()
    _wait_for(lambda: tunnel.stats().reconnects == 1, "the reconnect")
    assert len(attempts) == 3
    assert _get(tunnel.local_port, "/ping") == b"pong\n"
    tunnel.close()
    for transport in made:
        transport.close()


@pytest.mark.bed
def test_gives_up_after_bounded_attempts(ssh_host: SshHost, http_port: int) -> None:
    first = _connect(ssh_host)
    tries: list[int] = []

    def reconnect() -> Any:
        tries.append(1)
        raise HostError("connection refused")

    tunnel = Tunnel(
        first, 0, "127.0.0.1", http_port, reconnect=reconnect,
        tuning=TunnelTuning(backoff=Backoff(attempts=3, first_s=0.01, max_s=0.02)),
    ).start()  # fmt: skip
    port = tunnel.local_port
    first.close()
    assert tunnel.wait(WAIT_S), "the tunnel should stop after its last attempt"
    assert len(tries) == 3
    assert tunnel.stats().state == "failed"
    assert isinstance(tunnel.error, HostError)
    assert "3 reconnect attempts failed" in tunnel.error.line()
    assert is_port_free("127.0.0.1", port)
    tunnel.close()


@pytest.mark.bed
def test_without_reconnect_a_dead_transport_ends_the_tunnel(
    ssh_host: SshHost, http_port: int
) -> None:
    first = _connect(ssh_host)
    tunnel = Tunnel(first, 0, "127.0.0.1", http_port).start()
    first.close()
    assert tunnel.wait(WAIT_S)
    assert tunnel.stats().state == "failed"
    assert tunnel.error is not None


# -- the default the hook falls back to -------------------------------------------------


class _FakeSession:
    """Stands in for core's Session: ``.transport`` and ``reconnect()`` returning itself."""

    def __init__(self, host: SshHost) -> None:
        self.host = host
        self.transport = _connect(host)
        self.reconnects = 0

    def reconnect(self) -> _FakeSession:
        self.transport.close()
        self.transport = _connect(self.host)
        self.reconnects += 1
        return self

    def close(self) -> None:
        self.transport.close()


@pytest.mark.bed
def test_open_default_tunnel_uses_the_session_and_its_reconnect(
    ssh_host: SshHost, http_port: int
) -> None:
    """What core calls when no plugin answers ``orchestrate_open_tunnel``."""
    from orchestrate.core.api.hooks import orchestrate_open_tunnel

    session = _FakeSession(ssh_host)
    # Same leading arguments as the hook spec, so core can pass the hook's kwargs through.
    tunnel = open_default_tunnel(
        session=session, local_port=0, remote_host="127.0.0.1", remote_port=http_port
    )
    assert orchestrate_open_tunnel.__name__ == "orchestrate_open_tunnel"
    try:
        assert _get(tunnel.local_port, "/ping") == b"pong\n"
        session.transport.close()
        _wait_for(lambda: tunnel.stats().reconnects == 1, "the session's reconnect")
        assert session.reconnects == 1
        assert _get(tunnel.local_port, "/ping") == b"pong\n"
        assert tunnel.url == f"http://127.0.0.1:{tunnel.local_port}/"
    finally:
        tunnel.close()
        session.close()


@pytest.mark.bed
def test_a_session_that_reconnected_by_itself_is_not_reconnected_again(
    ssh_host: SshHost, http_port: int
) -> None:
    """A host step rebooted the VM and the session reconnected: the tunnel adopts the new
    transport instead of dropping it for yet another one."""
    session = _FakeSession(ssh_host)
    tunnel = open_default_tunnel(session, 0, "127.0.0.1", http_port)
    try:
        # The session has its new transport by the time the old one is seen dead.
        old, session.transport = session.transport, _connect(ssh_host)
        old.close()
        _wait_for(lambda: tunnel.stats().reconnects == 1, "the tunnel to follow the session")
        assert session.reconnects == 0
        assert tunnel.transport is session.transport
        assert _get(tunnel.local_port, "/ping") == b"pong\n"
    finally:
        tunnel.close()
        session.close()


def test_as_transport_accepts_transport_or_holder() -> None:
    class FakeTransport:
        def open_channel(self) -> None: ...

    class Holder:
        transport = FakeTransport()

    t: Any = FakeTransport()
    holder: Any = Holder()
    assert as_transport(t) is t
    assert as_transport(holder) is holder.transport
    with pytest.raises(TypeError):
        as_transport(object())  # type: ignore[arg-type]


# -- display and imports ------------------------------------------------------------------


def test_live_line_shows_address_traffic_and_reconnects_never_the_token() -> None:
    stats = TunnelStats(
        local_port=8899, bytes_up=1_234, bytes_down=12_345_678, connections=17, active=3,
        refused=0, reconnects=2, state="up", uptime_s=3723.0,
    )  # fmt: skip
    line = live_line(stats, "http://localhost:8899/?token=abc")
    assert line.startswith("localhost:8899  |  ") and "abc" not in line
    assert "down 12.3 MB" in line
    assert "up 1.2 kB" in line
    assert "3 open / 17 total" in line
    assert "reconnects 2" in line
    assert "1:02:03" in line
    assert "\n" not in line
    assert "refused" not in line and "UP" not in line

    trouble = TunnelStats(
        local_port=8899, bytes_up=0, bytes_down=0, connections=1, active=0, refused=1,
        reconnects=0, state="reconnecting", uptime_s=1.0,
    )  # fmt: skip
    line = live_line(trouble, "http://localhost:8899/")
    assert "refused 1" in line
    assert line.endswith("RECONNECTING")


@pytest.mark.parametrize(
    ("width", "parts"),
    [
        (20, ["RECONNECTING"]),
        (40, ["localhost:8899", "RECONNECTING"]),
        (59, ["localhost:8899", "down 20.0 MB", "RECONNECTING"]),
        (79, ["localhost:8899", "down 20.0 MB", "up 10.0 kB", "RECONNECTING"]),
        (200, ["localhost:8899", "down 20.0 MB", "up 10.0 kB", "2 open / 9 total",
               "refused 1", "reconnects 3", "0:01:05", "RECONNECTING"]),
    ],
)  # fmt: skip
def test_live_line_fits_the_width_dropping_the_least_important_parts(
    width: int, parts: list[str]
) -> None:
    """A line wider than the terminal wraps, and rewriting it stacks copies: at 60 columns
    the old line did that, and at 80 the traffic never showed. Trouble first, then where,
    then traffic, then the counters."""
    trouble = TunnelStats(
        local_port=8899, bytes_up=10_000, bytes_down=20_000_000, connections=9, active=2,
        refused=1, reconnects=3, state="reconnecting", uptime_s=65.0,
    )  # fmt: skip
    line = live_line(trouble, "http://localhost:8899/?token=" + "t" * 48, width)
    assert line == "  |  ".join(parts) and len(line) <= width


def test_backoff_is_bounded_and_grows() -> None:
    backoff = Backoff(attempts=6, first_s=1.0, max_s=5.0)
    assert [backoff.delay(i) for i in range(6)] == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_importing_the_tunnel_does_not_import_paramiko() -> None:
    code = "import sys, orchestrate.core.ssh.tunnel; print('paramiko' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.bed
@pytest.mark.parametrize("terminal", [True, False])
def test_run_foreground_closes_on_ctrl_c(
    transport: Any, http_port: int, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    """Ctrl-C ends the live line and closes the tunnel; the transport stays up."""
    tunnel = Tunnel(transport, 0, "127.0.0.1", http_port).start()
    calls = {"n": 0}
    real_wait = tunnel.wait

    def wait(timeout: float | None = None) -> bool:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_wait(0.01)

    monkeypatch.setattr(tunnel, "wait", wait)
    out: io.StringIO = _Terminal() if terminal else io.StringIO()
    run_foreground(tunnel, "http://127.0.0.1/x", out=out, interval_s=0.01)
    assert tunnel.stats().state == "closed"
    text = out.getvalue()
    hint, rest = text.split("\n", 1)
    assert hint == "tunnel open; Ctrl-C closes it and leaves the instance running"
    if terminal:  # rewritten in place three times, then a newline to leave the line
        assert rest.count("\r\x1b[2K") == 3
        assert rest.endswith("\n") and rest.count("\n") == 1
    else:  # a log gets one line, not one per tick
        assert rest.count("\n") == 1
        assert rest.startswith("127.0.0.1  |  ")
    assert transport.is_active()


@pytest.mark.bed
def test_run_foreground_reraises_a_final_failure(ssh_host: SshHost, http_port: int) -> None:
    first = _connect(ssh_host)
    tunnel = Tunnel(first, 0, "127.0.0.1", http_port).start()
    first.close()
    with pytest.raises(HostError, match="no reconnect"):
        run_foreground(tunnel, "http://127.0.0.1/x", out=io.StringIO(), interval_s=0.01)
