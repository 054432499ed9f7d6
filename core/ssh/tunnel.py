"""The local port forward to the notebook: core's answer to ``orchestrate_open_tunnel``.

A `Tunnel` listens on 127.0.0.1 (never a public address: the notebook token is the only
other guard) and, for each local connection, opens a ``direct-tcpip`` channel over the
session's existing SSH connection to the host's Jupyter on 127.0.0.1:8888. It exists,
rather than shelling out to ``ssh -L``, so one authenticated, host-key-pinned connection
serves every step of a command and so the tunnel can reconnect by itself and report
traffic on the live line.

It is as fast as ``ssh -L`` or faster (``bench/tunnel_bench.py``): the numbers and the
reasons live with the code they justify: `tunnel_tuning` (window by link, packet size),
`tunnel_link` (read-ahead, AES-GCM, sshd's TCP_NODELAY, keepalives), `tunnel_pump` (the
copies, EOFs sent together with the next open), `tunnel_spare` (a pre-opened channel).

And well behaved: a forward the remote refuses (Jupyter still starting) closes the local
socket at once; keepalives (SSH and TCP) notice a dead link and a ``reconnect`` callable
brings a new transport with bounded backoff (`tunnel_watch`); `close` leaves the session
(and the instance) alone. paramiko is imported only for type checking: ``orchestrate --help``
must not load it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import HostError
from orchestrate.core.ssh import tunnel_link as link
from orchestrate.core.ssh.heap import IdleTrim
from orchestrate.core.ssh.ports import bind_listener
from orchestrate.core.ssh.tunnel_channels import ChannelOpener
from orchestrate.core.ssh.tunnel_display import live_line, run_foreground
from orchestrate.core.ssh.tunnel_link import ReadAheadSocket, Reconnect, TransportLike, as_transport
from orchestrate.core.ssh.tunnel_pump import (
    Connection,
    Connections,
    EofBatcher,
    Workers,
    close_socket,
)
from orchestrate.core.ssh.tunnel_spare import SpareChannel
from orchestrate.core.ssh.tunnel_tuning import (
    DEFAULT_MAX_PACKET_SIZE,
    DEFAULT_WINDOW_SIZE,
    FAST_OPEN_S,
    LAN_WINDOW_SIZE,
    Backoff,
    TunnelTuning,
)
from orchestrate.core.ssh.tunnel_watch import TransportWatch

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

__all__ = [
    "DEFAULT_MAX_PACKET_SIZE",
    "DEFAULT_WINDOW_SIZE",
    "LAN_WINDOW_SIZE",
    "Backoff",
    "ReadAheadSocket",
    "Tunnel",
    "TunnelStats",
    "TunnelTuning",
    "as_transport",
    "live_line",
    "open_default_tunnel",
    "run_foreground",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunnelStats:
    """One snapshot of a tunnel, for the live line and ``orchestrate status``."""

    local_port: int
    bytes_up: int
    bytes_down: int
    connections: int
    active: int
    refused: int
    reconnects: int
    state: str  # "up", "reconnecting", "failed" or "closed"
    uptime_s: float


class Tunnel:
    """A local TCP listener whose connections are forwarded over an SSH transport.

    ``transport`` is a connected, authenticated paramiko Transport or an object with a
    ``.transport`` attribute (core's Session). The tunnel never closes a live transport, the
    first one or one ``reconnect`` returned: they belong to the caller (core's Session
    reconnects in place and closes its own), and closing the tunnel must leave the session
    usable. `transport` is the one in use now.
    """

    def __init__(
        self,
        transport: TransportLike,
        local_port: int,
        remote_host: str,
        remote_port: int,
        *,
        bind: str = "127.0.0.1",
        port_explicit: bool = False,
        reconnect: Reconnect | None = None,
        tuning: TunnelTuning = TunnelTuning(),
    ) -> None:
        self._transport: paramiko.Transport | None = as_transport(transport)
        self.requested_port = local_port
        self.local_port = local_port
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.bind = bind
        self.port_explicit = port_explicit
        self.tuning = tuning
        self.link = link.LinkCare(tuning)
        self.error: HostError | None = None
        self._lock = threading.Lock()
        self._reconnects = 0
        self._conns = Connections()
        self._state = "new"
        self._started = 0.0
        self._listener: socket.socket | None = None
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._up = threading.Event()
        self._warmed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._eofs = EofBatcher()
        self._channels = ChannelOpener(remote_host, remote_port, tuning, self._eofs)
        self._workers = Workers(f"tunnel-{local_port}-conn")
        self._idle_trim = IdleTrim()
        self._watch = TransportWatch(
            current=lambda: self._transport,
            reconnect=reconnect,
            backoff=tuning.backoff,
            closing=self._closing,
            alive=self._alive,
            lost=self._lost,
            replaced=self._replaced,
            failed=self._fail,
        )
        self._spare = SpareChannel(
            open_channel=lambda t: self._channels.open(t, ("127.0.0.1", 0)),
            current=lambda: self._transport if self._state == "up" else None,
            prepare=self._nudge_once,
            worth_it=lambda: tuning.prewarm is True or self._channels.open_s >= FAST_OPEN_S,
            on_link_error=self._watch.wake,
            on_settled=self._warmed.set,
            open_timeout_s=tuning.open_timeout_s,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Tunnel:
        """Bind the local port and start forwarding; returns self.

        Raises `UsageError` when the port is busy and was given explicitly (or every port
        tried is busy). The port actually bound is ``self.local_port`` afterwards.
        """
        if self._state != "new":
            raise RuntimeError("a Tunnel can be started once")
        listener = bind_listener(
            self.bind, self.requested_port, explicit=self.port_explicit,
            tries=self.tuning.port_tries,
        )  # fmt: skip
        self._listener = listener
        self.local_port = int(listener.getsockname()[1])
        assert self._transport is not None
        self.link.prepare(self._transport)
        self._started = time.monotonic()
        self._state = "up"
        self._up.set()
        loops = [("accept", self._accept_loop), ("monitor", self._watch.run)]
        if self.tuning.prewarm is not False:
            loops.append(("spare", self._spare.run))
            self._spare.want()
        for name, target in loops:
            thread = threading.Thread(
                target=target, name=f"tunnel-{self.local_port}-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.debug("tunnel %s -> %s:%d up", self.url, self.remote_host, self.remote_port)
        return self

    def close(self) -> None:
        """Stop listening, close every forwarded connection and free the port. Idempotent.

        Leaves the caller's transport (and so the instance) alone: closing the tunnel is
        what Ctrl-C does, and the notebook keeps running for the next ``orchestrate tunnel``.
        """
        if self._closing.is_set():
            return
        self._closing.set()
        self._warmed.set()
        self._watch.wake()
        self._spare.close()
        self._up.set()  # release connections waiting for a reconnect
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()
        self._conns.abort_all()
        self._workers.shutdown()
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:
                thread.join(timeout=5)
        if self._state != "failed":
            self._state = "closed"
        self._stopped.set()

    def warm(self, timeout: float | None = None) -> bool:
        """Block until the start-up work is done (re-key, sshd nudge, round trip, first spare
        channel); True if it is. Forwarding works before that, just not yet at full speed."""
        return self._warmed.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the tunnel stopped (closed or failed for good); True if it did."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> Tunnel:
        return self if self._state != "new" else self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> paramiko.Transport | None:
        """The transport the tunnel forwards over now (a new one after each reconnect)."""
        return self._transport

    @property
    def url(self) -> str:
        """The local base URL, e.g. ``http://127.0.0.1:8899/`` (add the token yourself)."""
        host = f"[{self.bind}]" if ":" in self.bind else self.bind
        return f"http://{host}:{self.local_port}/"

    def stats(self) -> TunnelStats:
        """Counters since start: bytes each way, connections, refusals, reconnects, state."""
        conns = self._conns
        with self._lock:
            return TunnelStats(
                local_port=self.local_port,
                bytes_up=conns.bytes_up,
                bytes_down=conns.bytes_down,
                connections=conns.total,
                active=conns.active(),
                refused=conns.refused,
                reconnects=self._reconnects,
                state=self._state,
                uptime_s=time.monotonic() - self._started if self._started else 0.0,
            )

    # -- transport care ----------------------------------------------------------------

    def _nudge_once(self) -> None:
        """Nudge sshd and time the link, once per transport (`LinkCare.nudge_once`)."""
        current = self._transport
        rtt = None if current is None else self.link.nudge_once(current)
        if rtt is not None and current is self._transport:
            self._channels.timed(rtt)

    def _alive(self) -> None:
        if self.tuning.prewarm is False:
            self._nudge_once()  # else the spare thread does it, before its first open
            self._warmed.set()
        conns = self._conns
        self._idle_trim.tick(conns.active(), conns.total + conns.bytes_up + conns.bytes_down)

    def _lost(self) -> None:
        self._up.clear()  # new connections wait (bounded) for the reconnect
        with self._lock:
            self._state = "reconnecting"

    def _replaced(self, fresh: paramiko.Transport) -> bool:
        self.link.prepare(fresh)
        if self._closing.is_set():
            return False
        with self._lock:
            self._transport = fresh
            self._reconnects += 1
            self._state = "up"
        self._channels.forget_link()
        self._up.set()
        self._spare.want()
        return True

    def _fail(self, message: str) -> None:
        """Give up for good: record why, stop listening, wake whoever waits in `wait`."""
        self.error = HostError(message, hint="run `orchestrate tunnel NAME` again")
        with self._lock:
            self._state = "failed"
        self._up.set()
        threading.Thread(target=self.close, name="tunnel-fail-close", daemon=True).start()

    # -- connections -------------------------------------------------------------------

    def _accept_loop(self) -> None:
        """Accept one local connection, pass the listener on, then serve that connection.

        Leader/follower: the thread that accepted a connection serves it at once and a
        parked worker takes over accepting. A hand-off to another thread would put a
        thread wake-up (tens to hundreds of microseconds in CPython) on every new
        connection's path; this way it happens beside it.
        """
        listener = self._listener
        assert listener is not None
        while not self._closing.is_set():
            try:
                client, peer = listener.accept()
            except OSError:
                if self._closing.is_set():
                    return
                time.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            self._workers.submit(self._accept_loop)
            self._forward(client, peer)
            return

    def _forward(self, client: socket.socket, peer: Any) -> None:
        """Get a channel for one local connection and start pumping both ways."""
        with contextlib.suppress(OSError):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conns.accepted()
        chan = None
        transport = self._current_transport()
        if transport is not None:
            if self.tuning.prewarm is not False:
                chan = self._spare.take(transport)
            chan = chan or self._open_for(transport, peer)
        if chan is None:
            close_socket(client)
            return
        conns = self._conns
        conn = Connection(client, chan, self._eofs.send_eof, conns.moved, self._spare.first_bytes)
        if conns.add(conn, self._closing):
            self._serve(conn)

    def _serve(self, conn: Connection) -> None:
        """Pump both ways: this thread carries the request (upload) right away; a worker,
        woken while the request travels, carries the answer (download)."""
        conn.parts = 2
        self._workers.submit(self._run_down, conn)
        try:
            conn.copy_up()
        finally:
            conn.up_finished.set()
            self._conns.release(conn)

    def _run_down(self, conn: Connection) -> None:
        try:
            conn.copy_down()
            conn.wait_for_upload()
        finally:
            self._conns.release(conn)

    def _current_transport(self) -> paramiko.Transport | None:
        """The live transport, waiting (bounded) while a reconnect is under way."""
        if not self._up.wait(timeout=self.tuning.reconnect_budget_s()):
            return None
        return None if self._closing.is_set() else self._transport

    def channel_window(self) -> int:
        """The receive window the next channel gets (`ChannelOpener.window`)."""
        return self._channels.window()

    def _open_for(self, transport: paramiko.Transport, peer: Any) -> paramiko.Channel | None:
        """The channel for a local connection, or None when it cannot be had.

        A refusal (`ChannelException`: nothing listens on the remote port, e.g. Jupyter not
        up yet) returns None so the caller closes the local socket at once: the browser sees
        the failure and retries, instead of a connection that hangs with nothing behind it.
        """
        import paramiko

        src = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("127.0.0.1", 0)
        try:
            chan = self._channels.open(transport, src)
        except paramiko.ChannelException as exc:
            self._conns.was_refused()
            log.debug("%s:%d refused the forward: %s", self.remote_host, self.remote_port, exc)
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("channel open failed: %s", exc)
            self._watch.wake()  # the transport may be dead: let the watch look now
            return None
        self._spare.unblock()
        return chan


def open_default_tunnel(
    session: TransportLike,
    local_port: int,
    remote_host: str,
    remote_port: int,
    *,
    port_explicit: bool = False,
    reconnect: Reconnect | None = None,
    bind: str = "127.0.0.1",
) -> Tunnel:
    """Core's forwarder, used when no plugin answers ``orchestrate_open_tunnel``.

    ``session`` is core's Session or any object with ``.transport`` (or a Transport).
    When ``reconnect`` is not given and the session has a ``reconnect()`` method, that is
    used, so a plain hook call still survives a dropped connection; if the session already
    reconnected by itself (a host step that rebooted the VM), its new transport is taken
    as is rather than replaced once more. Returns the started tunnel; raises `UsageError`
    for a busy explicit port.
    """
    tunnels: list[Tunnel] = []
    if reconnect is None:
        method = getattr(session, "reconnect", None)
        if callable(method):

            def reconnect() -> TransportLike:
                current = as_transport(session)
                if tunnels and current is not tunnels[0].transport and current.is_active():
                    return current
                return as_transport(method())

    tunnel = Tunnel(
        session,
        local_port,
        remote_host,
        remote_port,
        bind=bind,
        port_explicit=port_explicit,
        reconnect=reconnect,
    )
    tunnels.append(tunnel)
    return tunnel.start()
