"""One SSH connection per host per command, reused for every step (and by the tunnel).

Why a class of our own around paramiko.Transport instead of SSHClient:

- latency: paramiko never sets TCP_NODELAY, which costs about 40 ms (delayed ACK against
  Nagle) on each channel open or command; we open the socket ourselves with it set, plus
  SO_KEEPALIVE and paramiko's SSH-level keepalive so a dead link is noticed;
- trust: the host key is pinned on first contact (the caller keeps it in state) and compared
  right after key exchange, before authentication and before any command; SSHClient's
  known_hosts policies would either prompt or silently accept;
- boot: a fresh VM refuses or resets connections for a while, and its guest agent installs the
  login key a few seconds after sshd starts; `connect` retries both with backoff until a
  deadline, and tells the caller it is waiting (`on_wait`).

Key authentication only: no passwords, no agent, no ~/.ssh keys picked up by accident.
paramiko is imported inside the functions: `orchestrate --help` must not pay for it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from orchestrate.core.api.errors import HostError, HostKeyMismatch
from orchestrate.core.api.retry import Retry
from orchestrate.core.ssh.channelio import (
    CommandResult,
    Exchange,
    OnLine,
    exec_pipelined,
    note_exec,
)

if TYPE_CHECKING:  # pragma: no cover - types only, keeps start-up light
    import paramiko

#: on_wait(attempt, elapsed seconds, why the last try failed): "waiting for SSH" progress.
OnWait = Callable[[int, float, str], None]
#: socket_factory(address, port, timeout) -> a connected socket (a jump host, a test
#: network namespace); the session still sets TCP_NODELAY and keepalive on it.
SocketFactory = Callable[[str, int, float], socket.socket]

DEFAULT_DEADLINE_S = 300.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_KEEPALIVE_S = 15
#: A fresh VM's guest agent writes the login key shortly after sshd starts: keep retrying a
#: refused key for this long (within the deadline) before calling it wrong.
AUTH_GRACE_S = 60.0

# Host-key algorithms to offer for a pinned key type, so the server proves the pinned key
# and not another of its keys (sshd has ed25519, ecdsa and rsa keys; any could be chosen).
_KEY_TYPES = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"),
}


def normalize_key(line: str) -> str:
    """ "TYPE BASE64" from a key line ("ssh-ed25519 AAAA... comment" -> first two fields)."""
    return " ".join(line.split()[:2])


def fingerprint(line: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a key line, as `ssh-keygen -lf` prints it."""
    parts = line.split()
    try:
        blob = base64.b64decode(parts[1])
    except (IndexError, ValueError):
        return "(unreadable key)"
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def forget_hint(name: str | None) -> str:
    """How to accept a legitimately new host key (the CLI command that drops the pin)."""
    return (
        f"run `orchestrate forget-host-key {name or 'NAME'}` if the host was legitimately rebuilt"
    )


class _Retry(Exception):
    """A connection attempt failed in a way that waiting can fix (booting host)."""


class Session:
    """An authenticated SSH connection to one host. Build it with `Session.connect`.

    ``host_key`` is the key line the server proved ("ssh-ed25519 AAAA..."): the caller pins
    it in state after the first connection. ``transport`` is the paramiko Transport, which the
    tunnel opens its ``direct-tcpip`` channels on. ``commands`` counts `run` calls (each is
    one channel open and one exec request: two round trips).
    """

    def __init__(
        self,
        *,
        address: str,
        port: int,
        user: str,
        key_path: Path,
        host_key: str,
        transport: paramiko.Transport,
        name: str | None,
        connect_timeout_s: float,
        keepalive_s: int,
        socket_factory: SocketFactory | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.user = user
        self.key_path = key_path
        self.host_key = host_key
        self.transport = transport
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.socket_factory = socket_factory
        self.commands = 0
        self.connects = 1

    # -- connecting ------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        address: str,
        port: int,
        user: str,
        key_path: str | Path,
        *,
        pinned_host_key: str | None,
        deadline_s: float = DEFAULT_DEADLINE_S,
        on_wait: OnWait | None = None,
        name: str | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        keepalive_s: int = DEFAULT_KEEPALIVE_S,
        socket_factory: SocketFactory | None = None,
    ) -> Session:
        """Connect, check the host key against `pinned_host_key`, authenticate with the key.

        Refused connections, timeouts, resets and a not-yet-installed login key are retried
        with backoff (0.5 s doubling to 5 s) until `deadline_s` from now; `on_wait` hears of
        each retry. A host key other than the pinned one raises `HostKeyMismatch` at once,
        before authentication. `HostError` for anything else, and when the deadline passes.
        """
        from orchestrate.core.ssh import liblogs

        liblogs.route(name)  # paramiko's own records: the host log, not the live line
        key_path = Path(key_path).expanduser()
        pkey = _load_key(key_path)
        transport, host_key = _connect_with_retry(
            address,
            port,
            user,
            pkey,
            pinned_host_key=pinned_host_key,
            deadline_s=deadline_s,
            on_wait=on_wait,
            name=name,
            connect_timeout_s=connect_timeout_s,
            keepalive_s=keepalive_s,
            socket_factory=socket_factory,
        )
        return cls(
            address=address,
            port=port,
            user=user,
            key_path=key_path,
            host_key=host_key,
            transport=transport,
            name=name,
            connect_timeout_s=connect_timeout_s,
            keepalive_s=keepalive_s,
            socket_factory=socket_factory,
        )

    def reconnect(
        self, *, deadline_s: float = DEFAULT_DEADLINE_S, on_wait: OnWait | None = None
    ) -> Session:
        """Drop the connection and connect again to the same host, with the key it had.

        Used after a reboot (waits for SSH to come back) and by the tunnel after a dropped
        link. Returns this session, now on a new transport.
        """
        self._close_transport()
        transport, _ = _connect_with_retry(
            self.address,
            self.port,
            self.user,
            _load_key(self.key_path),
            pinned_host_key=self.host_key,
            deadline_s=deadline_s,
            on_wait=on_wait,
            name=self.name,
            connect_timeout_s=self.connect_timeout_s,
            keepalive_s=self.keepalive_s,
            socket_factory=self.socket_factory,
        )
        self.transport = transport
        self.connects += 1
        return self

    @property
    def active(self) -> bool:
        """Whether the transport is still up (False after a reboot dropped it)."""
        return bool(self.transport.is_active())

    def close(self) -> None:
        """Close the connection (and every channel on it, tunnel channels included)."""
        self._close_transport()

    def _close_transport(self) -> None:
        # closing a broken transport is best effort
        with contextlib.suppress(Exception):
            self.transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands --------------------------------------------------------------------

    def run(
        self,
        command: str,
        *,
        stdin: str | bytes | None = None,
        timeout: float | None = None,
        on_line: OnLine | None = None,
        done_when: Callable[[str], bool] | None = None,
        channel: paramiko.Channel | None = None,
    ) -> CommandResult:
        """Run `command` on the host and return its exit status and output.

        `channel`: a session channel opened ahead on this connection (the control socket
        keeps one ready), which saves the open's round trip.

        `stdin` is sent whole, then EOF (no stdin: EOF at once, so nothing waits for input).
        `on_line` gets each output line as it arrives, for live progress. `timeout` bounds the
        whole command (`HostError` when it passes); a connection that drops mid-command (a
        reboot) ends it with rc -1.

        Round trips: one for the channel open; the exec request is pipelined (not waited
        for), so output starts one round trip later. `done_when(stdout so far)` returning
        True ends the read at once, rc 0, without waiting for the EOF and exit status that
        sshd sends last (Nagle holds them back most of a round trip); the probe uses it.
        """
        with self.exchange(command, channel=channel) as exchange:
            return exchange.finish(stdin, timeout, on_line, done_when)

    @contextlib.contextmanager
    def exchange(
        self, command: str, *, channel: paramiko.Channel | None = None
    ) -> Iterator[Exchange]:
        """`command` started on its own channel, its stdin still open: read some output,
        then decide what to send (`Exchange`). The channel closes when the block ends.

        The runner uses it after a reboot: the probe's facts come back, the host waits on
        stdin while the runner plans, and the stage runs in the same exec, which saves the
        stage's channel, exec and shell start.
        """
        if not self.transport.is_active():
            raise HostError(
                f"the SSH connection to {self.address}:{self.port} is closed",
                hint="the host may have rebooted; run the command again",
            )
        import paramiko

        self.commands += 1
        dropped = (paramiko.SSHException, EOFError, OSError)
        opened_s = None
        try:
            if channel is None:
                began = time.monotonic()
                channel = self.transport.open_session(timeout=self.connect_timeout_s)
                opened_s = time.monotonic() - began
            chan = channel
        except dropped as exc:
            raise HostError(
                f"the SSH connection to {self.address}:{self.port} dropped: {exc}",
                hint="the host may be rebooting; run the command again",
            ) from exc
        try:
            exec_pipelined(chan, command)
            note_exec(chan.get_transport(), opened_s)
            yield Exchange(chan, command)
        except dropped as exc:
            raise HostError(
                f"the SSH connection to {self.address}:{self.port} dropped mid-command: {exc}",
                hint="the host may be rebooting; run the command again",
            ) from exc
        finally:
            chan.close()


# -- helpers ------------------------------------------------------------------------------


def _load_key(key_path: Path) -> paramiko.PKey:
    import paramiko

    try:
        return paramiko.PKey.from_path(key_path)
    except FileNotFoundError as exc:
        raise HostError(f"SSH key {key_path} not found") from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise HostError(f"cannot read SSH key {key_path}: {exc}") from exc


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges every segment at once (Linux TCP_QUICKACK).

    sshd leaves Nagle on for non-interactive sessions, so when it sends two small messages
    in a row (after authentication: a host-keys notice, then the channel-open confirmation)
    the second waits for our ACK of the first; a delayed ACK (40 ms or more) then adds most
    of a round trip. The flag is not sticky in the kernel, so it is set again after each read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data


def _tcp_socket(
    address: str, port: int, timeout: float, factory: SocketFactory | None
) -> socket.socket:
    """A connected socket with TCP_NODELAY (paramiko does not set it), TCP keepalive and,
    on Linux, quick ACKs."""
    if factory is not None:
        sock = factory(address, port, timeout)
    else:
        sock = socket.create_connection((address, port), timeout=timeout)
    if not isinstance(sock, socket.socket) or sock.type != socket.SOCK_STREAM:
        return sock  # a jump host's channel or similar: nothing to tune
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
    if not hasattr(socket, "TCP_QUICKACK") or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return sock
    quick = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    quick.settimeout(timeout)
    quick.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    return quick


def _connect_with_retry(
    address: str,
    port: int,
    user: str,
    pkey: paramiko.PKey,
    *,
    pinned_host_key: str | None,
    deadline_s: float,
    on_wait: OnWait | None,
    name: str | None,
    connect_timeout_s: float,
    keepalive_s: int,
    socket_factory: SocketFactory | None,
) -> tuple[paramiko.Transport, str]:
    """Connect as `Session.connect` describes: `_Retry` failures wait and try again."""
    deadline = time.monotonic() + deadline_s
    first_refusal: list[float] = []

    def refused() -> HostError:
        return HostError(
            f"{user}@{address}:{port} refused the SSH key {pkey.get_name()} "
            f"({fingerprint(pkey.get_name() + ' ' + pkey.get_base64())})",
            hint="the instance was not given this key, or the login user is wrong; "
            "on GCE, OS Login ignores ssh-keys metadata: set enable-oslogin=FALSE on "
            "the instance (orchestrate's default), or set os_login = true and "
            "ssh_user to your OS Login user after `gcloud compute os-login "
            "ssh-keys add`",
        )

    def attempt() -> tuple[paramiko.Transport, str]:
        return _connect_once(
            address,
            port,
            user,
            pkey,
            pinned_host_key=pinned_host_key,
            timeout=max(1.0, min(connect_timeout_s, deadline - time.monotonic())),
            name=name,
            keepalive_s=keepalive_s,
            socket_factory=socket_factory,
        )

    def on_retry(failures: int, elapsed: float, exc: Exception, delay: float) -> None:
        # A refused key is retried for a grace period only: a fresh VM's agent installs it
        # a little after sshd starts, but a wrong key should not wait the whole deadline.
        if str(exc).startswith("key refused"):
            first_refusal.append(elapsed)
            if elapsed - first_refusal[0] >= AUTH_GRACE_S:
                raise refused() from exc
        if on_wait is not None:
            on_wait(failures, elapsed, str(exc))

    policy = Retry(deadline_s=deadline_s, first_s=0.5, max_s=5.0)
    try:
        return policy.call(attempt, retry_if=lambda e: isinstance(e, _Retry), on_retry=on_retry)
    except _Retry as exc:  # the deadline came first
        if str(exc).startswith("key refused"):
            raise refused() from exc
        raise HostError(
            f"SSH on {address}:{port} did not answer within {deadline_s:.0f} s ({exc})",
            hint="the host may still be booting or its firewall blocks tcp:22; "
            "run the command again to keep waiting",
        ) from exc


def _connect_once(
    address: str,
    port: int,
    user: str,
    pkey: paramiko.PKey,
    *,
    pinned_host_key: str | None,
    timeout: float,
    name: str | None,
    keepalive_s: int,
    socket_factory: SocketFactory | None,
) -> tuple[paramiko.Transport, str]:
    import paramiko
    from orchestrate.core.ssh.tunnel_link import prefer_aead

    try:
        sock = _tcp_socket(address, port, timeout, socket_factory)
    except OSError as exc:  # refused, timed out, unreachable: a booting host
        raise _Retry(f"{type(exc).__name__}: {exc}") from exc
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = timeout
        transport.handshake_timeout = timeout
        options = transport.get_security_options()
        # AES-GCM first, in the first key exchange: the tunnel wants it (one pass in OpenSSL,
        # `tunnel_link.rekey_to_aead`), and a re-key later costs round trips that a launch
        # waits for before its tunnel listens. A server without it gets paramiko's order.
        prefer_aead(options)
        pinned = normalize_key(pinned_host_key) if pinned_host_key else None
        if pinned:
            key_type = pinned.split()[0]
            wanted = _KEY_TYPES.get(key_type, (key_type,))
            allowed = tuple(t for t in wanted if t in options.key_types)
            if not allowed:
                raise HostError(f"the pinned host key type {key_type} is not supported here")
            options.key_types = allowed
        try:
            transport.start_client(timeout=timeout)
        except paramiko.ssh_exception.IncompatiblePeer as exc:
            if pinned:  # the server no longer has a key of the pinned type at all
                raise HostKeyMismatch(
                    f"host key of {address}:{port} changed: it no longer offers the pinned "
                    f"{pinned.split()[0]} key {fingerprint(pinned)}",
                    hint=forget_hint(name),
                ) from exc
            raise HostError(f"cannot negotiate SSH with {address}:{port}: {exc}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        key = transport.get_remote_server_key()
        presented = f"{key.get_name()} {key.get_base64()}"
        if pinned and presented != pinned:
            raise HostKeyMismatch(
                f"host key of {address}:{port} changed: expected {fingerprint(pinned)}, "
                f"got {fingerprint(presented)}; refusing to run anything on it",
                hint=forget_hint(name),
            )
        try:
            remaining = transport.auth_publickey(user, pkey)
        except paramiko.AuthenticationException as exc:
            raise _Retry(f"key refused for {user}: {exc}") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _Retry(f"{type(exc).__name__}: {exc}") from exc
        if remaining or not transport.is_authenticated():
            raise HostError(
                f"{address}:{port} wants more than a key to log in ({', '.join(remaining)})"
            )
        transport.set_keepalive(keepalive_s)
        return transport, presented
    except BaseException:
        transport.close()
        raise
