"""The local port forward to the notebook: core's answer to ``orchestrate_open_tunnel``.

A `Tunnel` listens on 127.0.0.1 (never a public address: the notebook token is the only
other guard) and, for each local connection, opens a ``direct-tcpip`` channel over the
session's existing SSH connection to the host's Jupyter on 127.0.0.1:8888. It exists,
rather than shelling out to ``ssh -L``, so one authenticated, host-key-pinned connection
serves every step of a command and so the tunnel can reconnect by itself and report
traffic on the live line.

What makes it fast, each measured with ``bench/tunnel_bench.py`` against ``ssh -N -L``
(numbers: bench/results/tunnel.json; the run quoted here on 2 shared CPUs, OpenSSH 9.2):

* The channel window by link (`channel_window`): the window caps a download at window /
  round trip. 16 MiB on a slow link: 50 ms, 100 MB, window 2/4/8/16/32 MiB gave
  35/61/96/117/137 MB/s; 200 MB at 16 MiB 175 MB/s where OpenSSH's fixed 2 MiB gives 36.
  4 MiB on a fast link, where a bigger one only made sshd burn CPU.
* Large packets (`DEFAULT_MAX_PACKET_SIZE`) and AES-GCM (`_rekey_to_aead`): paramiko's
  cost is per packet and per byte, in Python and in two crypto passes (CTR, then HMAC).
* Reads drain paramiko's receive buffer in one call (`_RECV_SIZE`): its buffered pipe
  copies what is left after every partial read. Writes hand paramiko a memoryview, so its
  ``sendall`` does not copy the rest of the chunk for every packet.
* `ReadAheadSocket` under paramiko's packet reader: its exact-size reads kept Linux's
  receive-buffer autotuning from opening the TCP window (2 MB/s for the first seconds).
* TCP_NODELAY on our sockets, and sshd nudged into it (`_nudge_sshd_nodelay`): with Nagle
  on sshd's side, half of the back-to-back new connections took three round trips.
* A pre-opened channel on slow links (`Tunnel._take_spare`): a new connection costs one
  round trip instead of two. New connection on the 50 ms link: 52.6 ms, OpenSSH 152.6 ms.
* Loopback: download 308 vs 321 MB/s, upload 322 vs 291 (before tuning: 160, 202); a new
  connection 1.5 vs 0.7 ms: paramiko spends ~1 ms of Python per connection on its eight
  SSH messages, which no tuning here removes.

And well behaved: a forward the remote refuses (Jupyter still starting) closes the local
socket at once; keepalives (SSH and TCP) notice a dead link and a ``reconnect`` callable
brings a new transport with bounded backoff; `close` leaves the session (and the instance)
alone. paramiko is imported only for type checking: ``orchestrate --help`` must not load it.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO, Union

from orchestrate.core.api.errors import HostError
from orchestrate.core.ssh.ports import DEFAULT_PORT_TRIES, bind_listener

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

log = logging.getLogger(__name__)

#: Receive window of each forwarded channel over a slow link. Measured on the 50 ms link,
#: 100 MB down, 255 KiB packets: 2 MiB 35 MB/s (OpenSSH's window, and OpenSSH's figure),
#: 4 MiB 62, 8 MiB 96, 16 MiB 117, 32 MiB 137; 200 MB at 16 MiB: 175 MB/s. 16 MiB is more
#: than four times OpenSSH; 32 MiB would add a little more at twice the memory a channel
#: may hold when the local reader is slower than the link.
DEFAULT_WINDOW_SIZE = 16 * 1024 * 1024
#: ... and over a fast one (round trip under `_LAN_RTT_S`), where 4 MiB already allows
#: 400 MB/s, more than the tunnel carries. On loopback, 200 MB down through the tunnel,
#: 6 rounds alternating: 4 MiB median 158 MB/s, 16 MiB 117 (sshd, on the same CPUs, works
#: harder with the larger window: 0.35 s vs up to 1.7 s of CPU per 200-300 MB, measured).
LAN_WINDOW_SIZE = 4 * 1024 * 1024
#: Round trips shorter than this mean a LAN or loopback: `LAN_WINDOW_SIZE` is enough.
_LAN_RTT_S = 0.010
#: Largest SSH packet the host may send us per channel: 255 KiB keeps a whole packet under
#: OpenSSH's 256 KiB limit. Python's cost is per packet: raw paramiko on loopback, 200 MB,
#: 16 MiB window: 32 KiB packets 77-106 MB/s, 128 KiB 205-266, 255 KiB 276-366. On the
#: 50 ms link 32 KiB packets were also held by Nagle (sub-MSS with the bed's 64 KiB MTU).
DEFAULT_MAX_PACKET_SIZE = 255 * 1024

#: Bytes asked of the channel per read. Larger than any window we advertise so one read
#: empties paramiko's buffered pipe (a partial read costs a copy of everything left in it).
_RECV_SIZE = 64 * 1024 * 1024
#: Bytes read from the local socket per call: big enough that Python's per-call cost is
#: small next to the copy, small enough to keep the tunnel's memory per connection low.
_SOCK_RECV_SIZE = 256 * 1024

#: How long a local EOF waits for a connection accepted at the same moment to send its
#: channel open first (see `Tunnel._send_eof`): covers accept() waking up and the GIL.
_EOF_GRACE_S = 0.005

#: A pre-opened channel older than this is replaced rather than handed out: servers and
#: proxies drop idle connections after minutes (Jupyter's Tornado after an hour).
_SPARE_MAX_AGE_S = 120.0

#: How long a parked worker thread waits for another connection before it ends.
_WORKER_IDLE_S = 30.0
#: A taken spare is replaced as soon as its connection has sent or received its first bytes
#: (so the replacement's open does not compete with them), or after this long at the latest.
_SPARE_REPLACE_AFTER_S = 0.005
#: A round trip shorter than this means a fast link (loopback, LAN), where a pre-opened
#: channel saves less than the CPU it costs (measured on loopback: ~0.25 ms of the ~1 ms of
#: CPU per connection, for no gain in latency).
_FAST_OPEN_S = 0.003

#: Keepalive, seconds: an SSH-level ping when idle, and TCP probes plus a user timeout on
#: the transport's socket, so a dead link (laptop asleep, Wi-Fi gone) is found in about a
#: minute rather than TCP's default of many minutes.
DEFAULT_KEEPALIVE_S = 15

PumpKind = Literal["threads", "select"]


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


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff between reconnect attempts.

    The first attempt is immediate (a single dropped connection is the common case), then
    ``first_s``, doubling up to ``max_s``; after ``attempts`` failures the tunnel gives up and
    says so rather than retrying forever behind the user's back.
    """

    attempts: int = 10
    first_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based)."""
        if attempt <= 0:
            return 0.0
        return float(min(self.max_s, self.first_s * 2 ** (attempt - 1)))


class ReadAheadSocket:
    """A socket wrapper whose ``recv`` reads ahead in large chunks, for paramiko's reader.

    paramiko reads the SSH stream packet by packet with exact-size ``recv`` calls (16 bytes
    of header, then the rest). Measured on the 50 ms test link, that pattern keeps Linux's
    receive-buffer autotuning from growing the TCP window: the first seconds of a download
    crawled at ~2 MB/s (one 64 KiB segment per round trip) before it recovered, while
    ``ssh``, which reads whatever is there in one call, ramped up at once. Reading ahead
    256 KiB at a time gives the same ramp (measured: 30 MB first download at 42-54 MB/s
    instead of 10-13 MB/s). Everything else is the wrapped socket's own.

    Session should hand paramiko its socket wrapped in this; `Tunnel` installs it into a
    transport that does not have it yet (see `_install_read_ahead`).
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


def _install_read_ahead(transport: paramiko.Transport) -> bool:
    """Swap `ReadAheadSocket` in under paramiko's packet reader; True if it was installed.

    Uses paramiko's private ``Packetizer.__socket``, so it checks everything and does
    nothing when the shape differs. Safe while the transport runs: only the transport's
    own thread reads, it looks the attribute up on every ``recv``, and the wrapper starts
    empty, so no byte is read out of order.
    """
    packetizer = getattr(transport, "packetizer", None)
    attr = "_Packetizer__socket"
    raw = getattr(packetizer, attr, None)
    if packetizer is None or not isinstance(raw, socket.socket):
        return False
    setattr(packetizer, attr, ReadAheadSocket(raw))
    return True


class _Workers:
    """Reusable daemon threads: a new connection must not wait for a thread to be created.

    Starting a Python thread costs a few hundred microseconds on a busy machine, which is
    most of what a new connection costs on loopback; a parked worker is woken in tens.
    Workers park for `_WORKER_IDLE_S` and then end, so an idle tunnel holds no threads.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._idle = 0
        self._count = 0

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on a parked worker, or on a new one if none is parked."""
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._jobs.put((fn, args))
                return
            self._count += 1
            name = f"{self._name}-{self._count}"
        threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True).start()

    def _run(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        job: tuple[Callable[..., None], tuple[Any, ...]] | None = (fn, args)
        while job is not None:
            try:
                job[0](*job[1])
            except Exception:  # a job's failure must not kill the worker silently
                log.exception("tunnel worker job failed")
            with self._lock:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=_WORKER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    try:  # a job may have been queued for us just as we timed out
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        self._idle -= 1
                        return

    def shutdown(self) -> None:
        """Let every parked worker end now."""
        with self._lock:
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._jobs.put(None)


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
        window_size: int | None = None,
        max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
        reconnect: Reconnect | None = None,
        backoff: Backoff = Backoff(),
        keepalive_s: int = DEFAULT_KEEPALIVE_S,
        port_tries: int = DEFAULT_PORT_TRIES,
        open_timeout_s: float = 15.0,
        pump: PumpKind = "threads",
        prewarm: bool | None = None,
        nudge_nodelay: bool = True,
        read_ahead: bool = True,
        prefer_aead: bool = True,
    ) -> None:
        self._transport: paramiko.Transport | None = as_transport(transport)
        self.requested_port = local_port
        self.local_port = local_port
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.bind = bind
        self.port_explicit = port_explicit
        self.window_size = window_size
        self.max_packet_size = max_packet_size
        self._reconnect = reconnect
        self._backoff = backoff
        self._keepalive_s = keepalive_s
        self._port_tries = port_tries
        self._open_timeout_s = open_timeout_s
        if pump not in ("threads", "select"):
            raise ValueError(f"pump must be 'threads' or 'select', not {pump!r}")
        self._pump = pump
        self._prewarm = prewarm
        self._nudge_nodelay = nudge_nodelay
        self._read_ahead = read_ahead
        self._prefer_aead = prefer_aead
        self._nudged: paramiko.Transport | None = None

        self.error: HostError | None = None
        self._lock = threading.Lock()
        self._bytes_up = 0
        self._bytes_down = 0
        self._connections = 0
        self._refused = 0
        self._reconnects = 0
        self._state = "new"
        self._started = 0.0
        self._conns: set[_Connection] = set()
        self._pending_eofs: dict[paramiko.Channel, threading.Event] = {}
        self._listener: socket.socket | None = None
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._up = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        # The pre-opened channel (see _take_spare), guarded by _lock.
        self._spare: paramiko.Channel | None = None
        self._spare_transport: paramiko.Transport | None = None
        self._spare_born = 0.0
        self._spare_opening = False  # a spare's open is in flight
        self._spare_claimed = False  # a new connection waits for that in-flight spare
        self._spare_blocked = False  # the remote refused: no spares until a forward works
        self._spare_ready = threading.Condition(self._lock)
        self._spare_wanted = threading.Event()
        self._warmed = threading.Event()
        self._spare_due: float | None = None  # when to replace a taken spare at the latest
        self._open_s = 1.0  # the quickest channel open on this transport: its round trip
        self._workers = _Workers(f"tunnel-{local_port}-conn")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Tunnel:
        """Bind the local port and start forwarding; returns self.

        Raises `UsageError` when the port is busy and was given explicitly (or every port
        tried is busy). The port actually bound is ``self.local_port`` afterwards.
        """
        if self._state != "new":
            raise RuntimeError("a Tunnel can be started once")
        listener = bind_listener(
            self.bind, self.requested_port, explicit=self.port_explicit, tries=self._port_tries
        )
        self._listener = listener
        self.local_port = int(listener.getsockname()[1])
        assert self._transport is not None
        self._prepare_transport(self._transport)
        self._maybe_rekey(self._transport)
        self._started = time.monotonic()
        self._state = "up"
        self._up.set()
        loops: list[tuple[str, Callable[[], None]]] = [
            ("accept", self._accept_loop),
            ("monitor", self._monitor_loop),
        ]
        if self._prewarm is not False:
            loops.append(("spare", self._spare_loop))
            self._spare_wanted.set()
        for name, target in loops:
            thread = threading.Thread(
                target=target, name=f"tunnel-{self.local_port}-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        log.debug(
            "tunnel 127.0.0.1:%d -> %s:%d up", self.local_port, self.remote_host, self.remote_port
        )
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
        self._wake.set()
        self._spare_wanted.set()
        self._up.set()  # release connections waiting for a reconnect
        listener = self._listener
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.abort()
        with self._lock:
            spare, self._spare = self._spare, None
            self._spare_ready.notify_all()
        if spare is not None:
            with contextlib.suppress(Exception):
                spare.close()
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
        with self._lock:
            return TunnelStats(
                local_port=self.local_port,
                bytes_up=self._bytes_up,
                bytes_down=self._bytes_down,
                connections=self._connections,
                active=len(self._conns),
                refused=self._refused,
                reconnects=self._reconnects,
                state=self._state,
                uptime_s=time.monotonic() - self._started if self._started else 0.0,
            )

    # -- transport care ----------------------------------------------------------------

    def _prepare_transport(self, transport: paramiko.Transport) -> None:
        """Keepalives on the SSH layer and on its TCP socket; TCP_NODELAY if not yet set.

        The SSH keepalive alone does not detect a dead peer (it wants no reply); it makes
        traffic, and TCP_USER_TIMEOUT turns unacknowledged traffic into a socket error, which
        ends paramiko's reader thread, which the monitor sees as ``not is_active()``.
        """
        if self._keepalive_s > 0:
            transport.set_keepalive(self._keepalive_s)
        if self._read_ahead:
            _install_read_ahead(transport)
        sock = getattr(transport, "sock", None)
        if not isinstance(sock, socket.socket):
            return
        options: list[tuple[int, int, int]] = [
            (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
        ]
        if self._keepalive_s > 0:
            options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
            for name, value in (
                ("TCP_KEEPIDLE", self._keepalive_s),
                ("TCP_KEEPINTVL", max(1, self._keepalive_s // 3)),
                ("TCP_KEEPCNT", 4),
                ("TCP_USER_TIMEOUT", self._keepalive_s * 4 * 1000),
            ):
                opt = getattr(socket, name, None)
                if opt is not None:
                    options.append((socket.IPPROTO_TCP, opt, value))
        for level, opt, value in options:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, opt, value)

    def _current_transport(self) -> paramiko.Transport | None:
        """The live transport, waiting (bounded) while a reconnect is under way."""
        if not self._up.wait(timeout=self._reconnect_budget_s()):
            return None
        if self._closing.is_set():
            return None
        return self._transport

    def _reconnect_budget_s(self) -> float:
        """How long a new local connection may wait for a reconnect before it is dropped."""
        b = self._backoff
        return sum(b.delay(i) for i in range(b.attempts)) + self._open_timeout_s

    def _maybe_rekey(self, transport: paramiko.Transport) -> None:
        """Re-key to AES-GCM (see `_rekey_to_aead`) while no channel of ours is open.

        Done here, before any forwarding, on purpose: paramiko deadlocks its reader thread
        when a channel closes during a key exchange (paramiko issue #822: the reply to the
        close waits for the new keys, which only that thread can read). A failed re-key
        ends the transport, so after one failure the tunnel does not try again.
        """
        if self._prefer_aead:
            self._prefer_aead = _rekey_to_aead(transport)

    def _nudge_once(self) -> None:
        """Once per transport: nudge sshd into TCP_NODELAY (see `_nudge_sshd_nodelay`), then
        time a round trip, so that even the first channel gets the window for its link."""
        with self._lock:
            current = self._transport
            if current is None or current is self._nudged:
                return
            self._nudged = current
        if self._nudge_nodelay:
            _nudge_sshd_nodelay(current, self._open_timeout_s)
        rtt = _round_trip_s(current)
        with self._lock:
            if current is self._transport:
                self._open_s = min(self._open_s, rtt)

    def _monitor_loop(self) -> None:
        """Watch the transport; when it dies, reconnect with backoff or fail for good.

        Polls ``is_active()`` twice a second (paramiko has no death callback) and at once
        when a channel open failed with a transport error.
        """
        while not self._closing.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if self._closing.is_set():
                return
            transport = self._transport
            if transport is not None and transport.is_active():
                if self._prewarm is False:
                    self._nudge_once()  # else the spare loop does it, before its first open
                    self._warmed.set()
                continue
            self._up.clear()
            with self._lock:
                self._state = "reconnecting"
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            if not self._reconnect_with_backoff(transport):
                return

    def _reconnect_with_backoff(self, dead: paramiko.Transport | None) -> bool:
        """Try ``reconnect`` up to the backoff's attempts; False when the tunnel gave up."""
        if self._reconnect is None:
            self._fail("the ssh connection under the tunnel closed and no reconnect was given")
            return False
        last: BaseException | None = None
        for attempt in range(self._backoff.attempts):
            if self._closing.wait(self._backoff.delay(attempt)):
                return False
            try:
                fresh = as_transport(self._reconnect())
            except Exception as exc:  # any failure is one failed attempt; the last is shown
                last = exc
                log.debug("tunnel reconnect attempt %d failed: %s", attempt + 1, exc)
                continue
            if not fresh.is_active():
                last = HostError("reconnect returned a closed transport")
                continue
            self._prepare_transport(fresh)
            self._maybe_rekey(fresh)
            if self._closing.is_set():
                return False
            with self._lock:
                self._transport = fresh
                self._reconnects += 1
                self._state = "up"
                self._open_s = 1.0  # maybe another network now: time it anew
            self._up.set()
            self._spare_wanted.set()
            log.debug("tunnel reconnected after %d attempt(s)", attempt + 1)
            return True
        self._fail(
            f"the tunnel lost its ssh connection and {self._backoff.attempts} reconnect "
            f"attempts failed (last: {last})"
        )
        return False

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
        with self._lock:
            self._connections += 1
        transport = self._current_transport()
        chan = None
        if transport is not None:
            chan = self._take_spare(transport) or self._open_for(transport, peer)
        if chan is None:
            _close_socket(client)
            return
        conn = _Connection(client, chan, self._send_eof)
        with self._lock:
            if self._closing.is_set():
                conn.abort()
                return
            self._conns.add(conn)
        if self._pump == "select":
            try:
                self._pump_select(conn)
            finally:
                self._release(conn)
            return
        # Threads pump: this thread carries the request (upload) right away; a worker,
        # woken while the request travels, carries the answer (download).
        conn.parts = 2
        self._workers.submit(self._run_down, conn)
        self._run_up(conn)

    def _release(self, conn: _Connection) -> None:
        """Close both ends once every pump of ``conn`` is done, and forget it."""
        if conn.part_done():
            conn.finish()
            with self._lock:
                self._conns.discard(conn)

    def _open(self, transport: paramiko.Transport, src: tuple[str, int]) -> paramiko.Channel:
        """Open one ``direct-tcpip`` channel with the tuned window; paramiko's errors pass.

        Times the open, which is one round trip to the host: the window for the next
        channels follows from it (`channel_window`).
        """
        self._flush_eofs()  # right before our open: see _send_eof
        window = self.channel_window()
        began = time.monotonic()
        chan = transport.open_channel(
            "direct-tcpip",
            dest_addr=(self.remote_host, self.remote_port),
            src_addr=src,
            window_size=window,
            max_packet_size=self.max_packet_size,
            timeout=self._open_timeout_s,
        )
        # The quickest open so far is the round trip: a slow one only met a busy moment
        # (the very first open of a connection often takes a Nagle-delayed 40 ms).
        self._open_s = min(self._open_s, time.monotonic() - began)
        return chan

    def channel_window(self) -> int:
        """The receive window the next channel gets.

        The one given to the constructor, or else by link: the window caps a download at
        window / round trip, so a 50 ms link needs `DEFAULT_WINDOW_SIZE`, while on a fast link
        `LAN_WINDOW_SIZE` is plenty and measured faster (a bigger one made sshd, sharing the
        machine on loopback, burn CPU the tunnel needed). Until an open was timed, the link
        counts as slow: mistaking a fast link for a slow one only costs a little.
        """
        if self.window_size is not None:
            return self.window_size
        return LAN_WINDOW_SIZE if self._open_s < _LAN_RTT_S else DEFAULT_WINDOW_SIZE

    def _open_for(self, transport: paramiko.Transport, peer: Any) -> paramiko.Channel | None:
        """The channel for a local connection, or None when it cannot be had.

        A refusal (`ChannelException`: nothing listens on the remote port, e.g. Jupyter not
        up yet) returns None so the caller closes the local socket at once: the browser sees
        the failure and retries, instead of a connection that hangs with nothing behind it.
        """
        import paramiko

        src = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("127.0.0.1", 0)
        try:
            chan = self._open(transport, src)
        except paramiko.ChannelException as exc:
            with self._lock:
                self._refused += 1
            log.debug(
                "remote %s:%d refused the forward: %s", self.remote_host, self.remote_port, exc
            )
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("channel open failed: %s", exc)
            self._wake.set()  # the transport may be dead: let the monitor look now
            return None
        if self._spare_blocked:
            with self._lock:
                self._spare_blocked = False  # the remote answers again: pre-open anew
            self._spare_wanted.set()
        return chan

    # -- the pre-opened channel ----------------------------------------------------------

    def _take_spare(self, transport: paramiko.Transport) -> paramiko.Channel | None:
        """A channel opened ahead of time for the next connection, if one is (nearly) ready.

        Opening a channel costs a round trip to the host before the first byte can go: on a
        50 ms link that is half of a new connection's time. So, on a slow link, the tunnel
        keeps one channel to the notebook open in advance and hands it to the next local
        connection, which then costs one round trip (its request and answer) instead of two;
        a replacement is opened as soon as that request is through (`_first_bytes`). When
        the replacement's open is still in flight, waiting for it beats opening
        another (it was sent earlier). The remote just sees one idle connection; a spare the
        remote closed, or older than `_SPARE_MAX_AGE_S`, is replaced, never handed out.
        """
        if self._prewarm is False:
            return None
        with self._lock:
            if self._spare is None and self._spare_opening and not self._spare_claimed:
                self._spare_claimed = True
                deadline = time.monotonic() + self._open_timeout_s
                while self._spare_opening and not self._closing.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._spare_ready.wait(timeout=left)
                self._spare_claimed = False
            chan, self._spare = self._spare, None
            fresh = (
                chan is not None
                and self._spare_transport is transport
                and time.monotonic() - self._spare_born < _SPARE_MAX_AGE_S
            )
            if chan is not None and fresh:
                # Replace it once this connection's first bytes are through (_first_bytes).
                self._spare_due = time.monotonic() + _SPARE_REPLACE_AFTER_S
        self._spare_wanted.set()
        if chan is None:
            return None
        if not fresh or chan.closed or chan.eof_received:
            with contextlib.suppress(Exception):
                chan.close()
            return None
        return chan

    def _spare_loop(self) -> None:
        """Keep one channel pre-opened while the tunnel is up (see `_take_spare`)."""
        import paramiko

        while not self._closing.is_set():
            with self._lock:
                due = self._spare_due
            timeout = _SPARE_MAX_AGE_S / 2 if due is None else max(0.0, due - time.monotonic())
            self._spare_wanted.wait(timeout=timeout)
            self._spare_wanted.clear()
            if self._closing.is_set():
                return
            with self._lock:
                if self._spare_due is not None:
                    if time.monotonic() < self._spare_due:
                        continue  # woken early by the take itself: wait for first bytes
                    self._spare_due = None
            self._nudge_once()
            stale: paramiko.Channel | None = None
            with self._lock:
                transport = self._transport if self._state == "up" else None
                spare = self._spare
                if spare is not None and (
                    self._spare_transport is not transport
                    or spare.closed
                    or spare.eof_received
                    or time.monotonic() - self._spare_born >= _SPARE_MAX_AGE_S
                ):
                    stale, self._spare = spare, None
                need = (
                    transport is not None
                    and self._spare is None
                    and not self._spare_blocked
                    # By default only on a slow link: on a fast one a spare saves nothing.
                    and (self._prewarm is True or self._open_s >= _FAST_OPEN_S)
                )
                self._spare_opening = need
            if stale is not None:
                with contextlib.suppress(Exception):
                    stale.close()
            if not need or transport is None:
                self._warmed.set()
                continue
            chan: paramiko.Channel | None = None
            try:
                chan = self._open(transport, ("127.0.0.1", 0))
            except paramiko.ChannelException:
                with self._lock:
                    self._spare_blocked = True  # a real connection will find out and retry
            except (paramiko.SSHException, OSError, EOFError):
                self._wake.set()
            self._warmed.set()
            with self._lock:
                self._spare_opening = False
                keep = chan is not None and not self._closing.is_set()
                if keep:
                    self._spare = chan
                    self._spare_transport = transport
                    self._spare_born = time.monotonic()
                self._spare_ready.notify_all()
            if chan is not None and not keep:
                with contextlib.suppress(Exception):
                    chan.close()

    def _send_eof(self, chan: paramiko.Channel) -> None:
        """Pass a local half-close on, just before the next channel open if one comes soon.

        sshd does not set TCP_NODELAY on a connection without a terminal, so Nagle holds a
        small message it sends while another small one is unacknowledged. Our EOF makes sshd
        answer with EOF and CLOSE; if a channel-open confirmation (or the first answer on the
        new channel) follows within a round trip, it waits a whole round trip for the ACK.
        Browsers close and open connections back to back, and on a 50 ms link such a new
        connection took three round trips instead of two (measured: 155 vs 103 ms).
        OpenSSH escapes by an accident of its event loop: it reads the EOF and accepts the
        new connection in the same turn, so sshd gets both in one read and answers both in
        one write. We do the same on purpose: the EOF waits up to `_EOF_GRACE_S` for a new
        connection, whose thread sends it immediately before its open (`_flush_eofs`);
        otherwise it goes alone.
        """
        taken = threading.Event()
        with self._lock:
            self._pending_eofs[chan] = taken
        if taken.wait(_EOF_GRACE_S):
            return
        with self._lock:
            mine = self._pending_eofs.pop(chan, None) is not None
        if mine:
            with contextlib.suppress(Exception):
                chan.shutdown_write()

    def _flush_eofs(self) -> None:
        """Send every EOF waiting in `_send_eof` now, from the thread about to open."""
        with self._lock:
            pending, self._pending_eofs = self._pending_eofs, {}
        for chan, taken in pending.items():
            with contextlib.suppress(Exception):
                chan.shutdown_write()
            taken.set()

    def _first_bytes(self) -> None:
        """A connection's first bytes went through: replace the spare it took now.

        Right after the request, not before it (the open would compete with it) and not
        after the answer (one round trip later, when the next connection may already want
        the replacement).
        """
        with self._lock:
            if self._spare_due is None:
                return
            self._spare_due = time.monotonic()
        self._spare_wanted.set()

    def _count(self, up: int, down: int) -> None:
        with self._lock:
            self._bytes_up += up
            self._bytes_down += down

    def _run_up(self, conn: _Connection) -> None:
        """The upload half of the threads pump (see `_copy_up`)."""
        try:
            self._copy_up(conn)
        finally:
            conn.up_finished.set()
            self._release(conn)

    def _run_down(self, conn: _Connection) -> None:
        """The download half of the threads pump (see `_copy_down`).

        Two blocking copies, one thread each way: no polling, no busy loop. Each direction
        forwards end-of-file as a half-close, like ``ssh -L``; the connection ends when
        both directions have. If the remote closed the channel outright, nothing more can go
        up: the local socket is ended too rather than left waiting on a client that waits on
        us.
        """
        try:
            self._copy_down(conn)
            while not conn.up_finished.wait(timeout=0.5):
                if conn.chan.closed:
                    conn.abort()
        finally:
            self._release(conn)

    def _copy_down(self, conn: _Connection) -> None:
        chan, client = conn.chan, conn.client
        first = True
        try:
            while True:
                data = chan.recv(_RECV_SIZE)
                if not data:
                    break
                client.sendall(data)
                self._count(0, len(data))
                if first:
                    first = False
                    self._first_bytes()
        except (OSError, EOFError) as exc:
            log.debug("download side ended: %s", exc)
            conn.abort()
            return
        conn.down_done()

    def _copy_up(self, conn: _Connection) -> None:
        chan, client = conn.chan, conn.client
        first = True
        try:
            while True:
                data = client.recv(_SOCK_RECV_SIZE)
                if not data:
                    break
                chan.sendall(memoryview(data))  # type: ignore[arg-type]
                self._count(len(data), 0)
                if first:
                    first = False
                    self._first_bytes()
        except (OSError, EOFError) as exc:
            log.debug("upload side ended: %s", exc)
            conn.abort()
        else:
            conn.up_done()

    def _pump_select(self, conn: _Connection) -> None:
        """One thread per connection multiplexing both ways with select().

        paramiko's channel exposes a pipe file descriptor that becomes readable when data
        arrives, so the local socket and the channel can share one select(). Kept as the
        measured alternative to the threads pump (`_run_up`, `_run_down`); see
        ``bench/tunnel_bench.py --pumps``.
        """
        chan, client = conn.chan, conn.client
        up_open = down_open = True
        first = True
        try:
            while up_open or down_open:
                if conn.aborted or (not down_open and chan.closed):
                    return
                watch: list[Any] = []
                if up_open:
                    watch.append(client)
                if down_open:
                    watch.append(chan)
                readable, _, _ = select.select(watch, [], [], 1.0)
                if first and readable:
                    first = False
                    self._first_bytes()  # the bytes are about to go
                if chan in readable:
                    data = chan.recv(_RECV_SIZE)
                    if data:
                        client.sendall(data)
                        self._count(0, len(data))
                    else:
                        down_open = False
                        conn.down_done()
                if client in readable:
                    data = client.recv(_SOCK_RECV_SIZE)
                    if data:
                        chan.sendall(memoryview(data))  # type: ignore[arg-type]
                        self._count(len(data), 0)
                    else:
                        up_open = False
                        conn.up_done()
        except (OSError, EOFError, ValueError) as exc:
            log.debug("select pump ended: %s", exc)
            conn.abort()


class _Connection:
    """One forwarded connection: the local socket, its channel, and how far each side is."""

    def __init__(
        self,
        client: socket.socket,
        chan: paramiko.Channel,
        send_eof: Callable[[paramiko.Channel], None],
    ) -> None:
        self.client = client
        self.chan = chan
        self._send_eof = send_eof
        self.aborted = False
        self.up_finished = threading.Event()
        self.parts = 1  # pumps still running; the last one to end closes both ends
        self._lock = threading.Lock()

    def part_done(self) -> bool:
        """One pump ended; True for the last one."""
        with self._lock:
            self.parts -= 1
            return self.parts == 0

    def up_done(self) -> None:
        """The local client sent EOF: pass the half-close on to the remote."""
        self._send_eof(self.chan)

    def down_done(self) -> None:
        """The remote sent EOF: half-close the local socket; if the channel is closed too,
        nothing more can go up either, so end the local socket entirely (the upload thread
        would otherwise wait on a client that waits for us)."""
        how = socket.SHUT_RDWR if self.chan.closed else socket.SHUT_WR
        with contextlib.suppress(OSError):
            self.client.shutdown(how)

    def abort(self) -> None:
        """Tear both ends down now (error, tunnel closing): wakes any blocked pump."""
        self.aborted = True
        with contextlib.suppress(Exception):
            self.chan.close()
        with contextlib.suppress(OSError):
            self.client.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        """Release both ends once the pumps are done."""
        with contextlib.suppress(Exception):
            self.chan.close()
        _close_socket(self.client)


def _rekey_to_aead(transport: paramiko.Transport) -> bool:
    """Re-key to AES-GCM if the transport runs another cipher; True if it now runs GCM.

    paramiko prefers aes128-ctr with hmac-sha2-256: two passes over every byte, the MAC in
    Python-called hashlib. AES-GCM is one pass in OpenSSL. Measured on loopback, 200 MB
    through a raw channel: aes128-ctr 170-217 MB/s with 0.6-0.8 s of CPU, aes128-gcm
    284-387 MB/s with 0.3-0.47 s. Session should ask for GCM when it connects, making this a
    no-op; until then the tunnel re-keys once, with paramiko's public API (the cipher
    preference, then ``renegotiate_keys``). A server without GCM just gets its old cipher.
    """
    import paramiko

    cipher = str(getattr(transport, "remote_cipher", ""))
    if cipher.endswith("-gcm@openssh.com"):
        return True
    options = transport.get_security_options()
    current = tuple(options.ciphers)
    aead = tuple(c for c in current if c.endswith("-gcm@openssh.com"))
    if not aead:
        return False
    options.ciphers = aead + tuple(c for c in current if c not in aead)
    try:
        transport.renegotiate_keys()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        log.debug("re-key to AES-GCM failed: %s", exc)
        return False
    return str(getattr(transport, "remote_cipher", "")).endswith("-gcm@openssh.com")


def _round_trip_s(transport: paramiko.Transport, probes: int = 2) -> float:
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


def _nudge_sshd_nodelay(transport: paramiko.Transport, timeout_s: float) -> None:
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


def _close_socket(sock: socket.socket) -> None:
    """Shut down and close: the shutdown makes the peer see EOF even if a dup lingers."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


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


# -- the foreground display -------------------------------------------------------------


def _human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def _human_duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def live_line(stats: TunnelStats, url: str) -> str:
    """The one line ``orchestrate tunnel`` keeps rewriting in the foreground.

    URL first (what the user copies), then traffic, then what explains trouble:
    open connections, reconnects, and the state when it is not simply up. Plain ASCII so it
    survives any terminal and log file.
    """
    parts = [
        url,
        f"down {_human_bytes(stats.bytes_down)}",
        f"up {_human_bytes(stats.bytes_up)}",
        f"{stats.active} open / {stats.connections} total",
        f"reconnects {stats.reconnects}",
        _human_duration(stats.uptime_s),
    ]
    if stats.refused:
        parts.insert(4, f"refused {stats.refused}")
    if stats.state != "up":
        parts.append(stats.state.upper())
    return "  |  ".join(parts)


def run_foreground(
    tunnel: Tunnel,
    url: str,
    *,
    out: TextIO | None = None,
    interval_s: float = 1.0,
    log_every_s: float = 60.0,
) -> None:
    """Show `live_line` until Ctrl-C or a final failure; always closes the tunnel.

    On a terminal the line is rewritten in place every ``interval_s``, cut to the terminal's
    width so it never wraps (a wrapped line cannot be rewritten). Into a file or pipe it is
    written when the state or the reconnect count changes and every ``log_every_s``, so a
    log does not grow by a line a second.

    Only the tunnel closes: the instance and the notebook keep running. Re-raises the
    tunnel's `HostError` when it gave up reconnecting, so the CLI prints it and exits
    non-zero.
    """
    import shutil

    stream = out if out is not None else sys.stderr
    tty = stream.isatty()
    last_key: tuple[str, int] | None = None
    last_log = 0.0
    try:
        while True:
            stats = tunnel.stats()
            line = live_line(stats, url)
            if tty:
                width = shutil.get_terminal_size().columns
                stream.write("\r\x1b[2K" + line[: max(width - 1, len(url))])
                stream.flush()
            else:
                key = (stats.state, stats.reconnects)
                now = time.monotonic()
                if key != last_key or now - last_log >= log_every_s:
                    stream.write(line + "\n")
                    stream.flush()
                    last_key, last_log = key, now
            if tunnel.wait(interval_s):
                break
    except KeyboardInterrupt:
        pass
    finally:
        tunnel.close()
        if tty:
            stream.write("\n")
            stream.flush()
    if tunnel.error is not None:
        raise tunnel.error
