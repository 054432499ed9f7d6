"""What the tunnel does to the SSH connection under it, before and besides forwarding.

Each is a measured fix for something that made paramiko slower than ``ssh -L`` (figures from
``bench/tunnel_bench.py``): read-ahead under paramiko's packet reader, a re-key to AES-GCM,
sshd nudged into TCP_NODELAY, keepalives that notice a dead link; and the round trip that
picks the channel window. paramiko is imported only inside functions.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, Union

from orchestrate.core.api import compat
from orchestrate.core.api.errors import HostError
from orchestrate.core.api.retry import Retry
from orchestrate.core.ssh.tunnel_tuning import TunnelTuning

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

log = logging.getLogger(__name__)


class HasTransport(Protocol):
    """Anything that carries a connected paramiko Transport, such as core's Session."""

    @property
    def transport(self) -> paramiko.Transport: ...


TransportLike = Union["paramiko.Transport", HasTransport]
#: Called by the tunnel after the transport died; returns a new, authenticated one.
Reconnect = Callable[[], TransportLike]


def as_transport(obj: TransportLike) -> paramiko.Transport:
    """The paramiko Transport behind ``obj``: a Transport itself or anything with ``.transport``.

    Duck-typed on ``open_channel`` so this module never imports paramiko at run time.
    """
    if hasattr(obj, "open_channel"):
        return obj  # type: ignore[return-value]
    transport = getattr(obj, "transport", None)
    if transport is None or not hasattr(transport, "open_channel"):
        raise TypeError(f"expected a paramiko Transport or an object with .transport, not {obj!r}")
    return transport  # type: ignore[no-any-return]


class ReadAheadSocket:
    """A socket wrapper whose ``recv`` reads ahead in large chunks, for paramiko's reader.

    paramiko reads the SSH stream packet by packet with exact-size ``recv`` calls (16 bytes
    of header, then the rest). Measured on the 50 ms test link, that pattern keeps Linux's
    receive-buffer autotuning from growing the TCP window: the first seconds of a download
    crawled at ~2 MB/s (one 64 KiB segment per round trip) before it recovered, while
    ``ssh``, which reads whatever is there in one call, ramped up at once. Reading ahead
    256 KiB at a time gives the same ramp (measured: 30 MB first download at 42-54 MB/s
    instead of 10-13 MB/s). Everything else is the wrapped socket's own.
    """

    def __init__(self, sock: socket.socket, chunk: int = 256 * 1024) -> None:
        self._sock = sock
        self._chunk = chunk
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos < len(self._buf):
            end = self._pos + n
            out = self._buf[self._pos : end]
            self._pos = end
            return out
        data = self._sock.recv(max(n, self._chunk))
        if len(data) <= n:
            return data
        self._buf, self._pos = data, n
        return data[:n]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def install_read_ahead(transport: paramiko.Transport) -> bool:
    """Swap `ReadAheadSocket` in under paramiko's packet reader; True if it was installed.

    Goes through paramiko's private packetizer socket (`compat`), and does nothing when the
    shape differs. Safe while the transport runs: only the transport's own thread reads, it
    looks the attribute up on every ``recv``, and the wrapper starts empty, so no byte is
    read out of order.
    """
    raw = compat.packetizer_socket(transport)
    if not isinstance(raw, socket.socket):
        return False
    return compat.replace_packetizer_socket(transport, ReadAheadSocket(raw))


def keep_alive(transport: paramiko.Transport, keepalive_s: int) -> None:
    """Keepalives on the SSH layer and on its TCP socket; TCP_NODELAY if not yet set.

    The SSH keepalive alone does not detect a dead peer (it wants no reply); it makes
    traffic, and TCP_USER_TIMEOUT turns unacknowledged traffic into a socket error, which
    ends paramiko's reader thread, which the tunnel's monitor sees as ``not is_active()``.
    """
    if keepalive_s > 0:
        transport.set_keepalive(keepalive_s)
    sock = getattr(transport, "sock", None)
    if not isinstance(sock, socket.socket):
        return
    options: list[tuple[int, int, int]] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if keepalive_s > 0:
        options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
        for name, value in (
            ("TCP_KEEPIDLE", keepalive_s),
            ("TCP_KEEPINTVL", max(1, keepalive_s // 3)),
            ("TCP_KEEPCNT", 4),
            ("TCP_USER_TIMEOUT", keepalive_s * 4 * 1000),
        ):
            opt = getattr(socket, name, None)
            if opt is not None:
                options.append((socket.IPPROTO_TCP, opt, value))
    for level, opt, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, opt, value)


def prefer_aead(options: paramiko.SecurityOptions) -> bool:
    """Put AES-GCM first in a transport's cipher preference (the next key exchange's);
    False when paramiko offers none."""
    current = tuple(options.ciphers)
    aead = tuple(c for c in current if c.endswith("-gcm@openssh.com"))
    options.ciphers = aead + tuple(c for c in current if c not in aead)
    return bool(aead)


def rekey_to_aead(transport: paramiko.Transport) -> bool:
    """Re-key to AES-GCM if the transport runs another cipher; True if it now runs GCM.

    paramiko prefers aes128-ctr with hmac-sha2-256: two passes over every byte, the MAC in
    Python-called hashlib. AES-GCM is one pass in OpenSSL. Measured on loopback, 200 MB
    through a raw channel: aes128-ctr 170-217 MB/s with 0.6-0.8 s of CPU, aes128-gcm
    284-387 MB/s with 0.3-0.47 s. core's Session asks for GCM when it connects, making this
    a no-op; a transport made elsewhere (a plugin's) is re-keyed once, with paramiko's public
    API (the cipher preference, then ``renegotiate_keys``). A server without GCM just gets
    its old cipher.
    """
    import paramiko

    cipher = str(getattr(transport, "remote_cipher", ""))
    if cipher.endswith("-gcm@openssh.com"):
        return True
    if not prefer_aead(transport.get_security_options()):
        return False
    try:
        transport.renegotiate_keys()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.debug("re-key to AES-GCM failed: %s", exc)
        return False
    return str(getattr(transport, "remote_cipher", "")).endswith("-gcm@openssh.com")


def round_trip_s(transport: paramiko.Transport, probes: int = 2) -> float:
    """The quickest of a few SSH round trips (a global request sshd answers at once).

    ``keepalive@openssh.com`` is what OpenSSH's own keepalive sends; any server answers an
    unknown global request with a failure, which is just as good a round trip. Returns 1 s
    (a slow link) when the transport cannot tell.
    """
    best = 1.0
    for _ in range(probes):
        began = time.monotonic()
        try:
            transport.global_request("keepalive@openssh.com", wait=True)
        except Exception:  # a dying transport: the monitor will see to it
            return best
        if not transport.is_active():
            return best
        best = min(best, time.monotonic() - began)
    return best


def nudge_sshd_nodelay(transport: paramiko.Transport, timeout_s: float) -> None:
    """Run ``true`` once so that OpenSSH's sshd sets TCP_NODELAY on this connection.

    sshd enables TCP_NODELAY on the first exec or shell request of a connection
    (``ssh_packet_set_interactive``), never for one that only forwards, like ``ssh -N -L``.
    Without it, Nagle makes sshd hold any small message while another is unacknowledged,
    and on a 50 ms link a new connection's confirmation or first answer then waits a whole
    round trip behind the close of the previous connection: measured, about half of the
    back-to-back new connections took three round trips instead of two. core's Session
    has usually run commands on the connection already; this makes the tunnel independent
    of that. Best effort: a host that refuses exec just keeps Nagle.
    """
    import paramiko

    try:
        chan = transport.open_session(timeout=timeout_s)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.debug("could not open a session to nudge sshd: %s", exc)
        return
    try:
        chan.settimeout(timeout_s)
        chan.exec_command("true")
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.debug("exec to nudge sshd failed: %s", exc)
    finally:
        with contextlib.suppress(Exception):
            chan.close()


def reconnect_with(
    reconnect: Reconnect, backoff: Retry, closing: threading.Event
) -> paramiko.Transport:
    """A new live transport from ``reconnect``, tried as ``backoff`` allows.

    The waits end early when ``closing`` is set, and then nothing more is tried. Raises the
    last failure when the attempts ran out (or the tunnel closed).
    """

    def attempt() -> paramiko.Transport:
        fresh = as_transport(reconnect())
        if not fresh.is_active():
            raise HostError("reconnect returned a closed transport")
        return fresh

    return replace(backoff, sleep=closing.wait).call(
        attempt,
        retry_if=lambda _exc: not closing.is_set(),
        on_retry=lambda n, _s, exc, _d: log.debug("tunnel reconnect %d failed: %s", n, exc),
    )


class LinkCare:
    """What the tunnel does to each transport it forwards over, once per transport.

    `prepare` before any channel: keepalives, read-ahead, then the re-key to AES-GCM while
    no channel of ours is open (paramiko deadlocks its reader thread when a channel closes
    during a key exchange, paramiko issue #822). A failed re-key ends the transport, so after
    one failure no other is tried. `nudge_once` later, off the connection's path: sshd's
    TCP_NODELAY, then a timed round trip, so that even the first channel gets the window for
    its link. The benchmark subclasses it to leave extras out.
    """

    def __init__(self, tuning: TunnelTuning) -> None:
        self._tuning = tuning
        self._aead = tuning.prefer_aead
        self._lock = threading.Lock()
        self._nudged: paramiko.Transport | None = None

    def prepare(self, transport: paramiko.Transport) -> None:
        keep_alive(transport, self._tuning.keepalive_s)
        self.tune_reader(transport)
        if self._aead:
            self._aead = rekey_to_aead(transport)

    def tune_reader(self, transport: paramiko.Transport) -> None:
        install_read_ahead(transport)

    def nudge_sshd(self, transport: paramiko.Transport) -> None:
        nudge_sshd_nodelay(transport, self._tuning.open_timeout_s)

    def nudge_once(self, transport: paramiko.Transport) -> float | None:
        """The link's round trip after the nudge; None when this transport had its nudge.

        Neither is sent on a transport where core's Session already ran a command (the
        probe, on a launch's path): sshd set TCP_NODELAY then, and the command's channel
        open was timed. Exchanges here would only come after the launch's own, as round
        trips on its wire while it finishes."""
        from orchestrate.core.ssh.channelio import exec_seen

        with self._lock:
            if transport is self._nudged:
                return None
            self._nudged = transport
        executed, opened_s = exec_seen(transport)
        if not executed:
            self.nudge_sshd(transport)
        if opened_s is not None:
            return opened_s
        return round_trip_s(transport)
