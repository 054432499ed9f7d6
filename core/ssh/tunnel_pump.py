"""Moving bytes for the tunnel: the worker threads, one forwarded connection, its EOFs.

Two blocking copies per connection, one thread each way (no polling, no busy loop), on
reusable worker threads. Each direction forwards end-of-file as a half-close, like
``ssh -L``; the connection ends when both directions have.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrate.core.ssh.tunnel_tuning import (
    EOF_GRACE_S,
    RECV_SIZE,
    SOCK_RECV_SIZE,
    WORKER_IDLE_S,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

log = logging.getLogger(__name__)


class Workers:
    """Reusable daemon threads: a new connection must not wait for a thread to be created.

    Starting a Python thread costs a few hundred microseconds on a busy machine, which is
    most of what a new connection costs on loopback; a parked worker is woken in tens.
    Workers park for `WORKER_IDLE_S` and then end, so an idle tunnel holds no threads.
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
                job = self._jobs.get(timeout=WORKER_IDLE_S)
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


class Connection:
    """One forwarded connection: the local socket, its channel, and how far each side is.

    ``moved(up, down)`` hears of every copy (the tunnel's counters); ``first_bytes()`` once,
    when the first bytes went either way (the moment to replace a taken spare channel).
    """

    def __init__(
        self,
        client: socket.socket,
        chan: paramiko.Channel,
        send_eof: Callable[[paramiko.Channel], None],
        moved: Callable[[int, int], None],
        first_bytes: Callable[[], None],
    ) -> None:
        self.client = client
        self.chan = chan
        self._send_eof = send_eof
        self._moved = moved
        self._first_bytes: Callable[[], None] | None = first_bytes
        self.aborted = False
        self.up_finished = threading.Event()
        self.parts = 1  # pumps still running; the last one to end closes both ends
        self._lock = threading.Lock()

    def moved(self, up: int, down: int) -> None:
        """Count bytes that went through; the first ones also call ``first_bytes``."""
        self._moved(up, down)
        first, self._first_bytes = self._first_bytes, None
        if first is not None:
            first()

    def copy_down(self) -> None:
        """Channel to local socket until the remote's EOF (then half-close) or an error."""
        try:
            while True:
                data = self.chan.recv(RECV_SIZE)
                if not data:
                    break
                self.client.sendall(data)
                self.moved(0, len(data))
        except (OSError, EOFError) as exc:
            log.debug("download side ended: %s", exc)
            self.abort()
            return
        self.down_done()

    def copy_up(self) -> None:
        """Local socket to channel until the client's EOF (then half-close) or an error.

        Hands paramiko a memoryview, so its ``sendall`` does not copy the rest of the chunk
        for every packet."""
        try:
            while True:
                data = self.client.recv(SOCK_RECV_SIZE)
                if not data:
                    break
                self.chan.sendall(memoryview(data))  # type: ignore[arg-type]
                self.moved(len(data), 0)
        except (OSError, EOFError) as exc:
            log.debug("upload side ended: %s", exc)
            self.abort()
        else:
            self.up_done()

    def wait_for_upload(self) -> None:
        """After the download ended: wait for the upload, ending the local socket if the
        remote closed the channel outright (nothing more can go up, and the client may be
        waiting on us)."""
        while not self.up_finished.wait(timeout=0.5):
            if self.chan.closed:
                self.abort()

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
        close_socket(self.client)


class EofBatcher:
    """Passes a local half-close on, just before the next channel open if one comes soon.

    sshd does not set TCP_NODELAY on a connection without a terminal, so Nagle holds a
    small message it sends while another small one is unacknowledged. Our EOF makes sshd
    answer with EOF and CLOSE; if a channel-open confirmation (or the first answer on the
    new channel) follows within a round trip, it waits a whole round trip for the ACK.
    Browsers close and open connections back to back, and on a 50 ms link such a new
    connection took three round trips instead of two (measured: 155 vs 103 ms).
    OpenSSH escapes by an accident of its event loop: it reads the EOF and accepts the
    new connection in the same turn, so sshd gets both in one read and answers both in
    one write. We do the same on purpose: the EOF waits up to `EOF_GRACE_S` for a new
    connection, whose thread sends it immediately before its open (`flush`); otherwise it
    goes alone.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[paramiko.Channel, threading.Event] = {}

    def send_eof(self, chan: paramiko.Channel) -> None:
        """Half-close ``chan``, within `EOF_GRACE_S`, by this thread or an opening one."""
        taken = threading.Event()
        with self._lock:
            self._pending[chan] = taken
        if taken.wait(EOF_GRACE_S):
            return
        with self._lock:
            mine = self._pending.pop(chan, None) is not None
        if mine:
            with contextlib.suppress(Exception):
                chan.shutdown_write()

    def flush(self) -> None:
        """Send every waiting EOF now, from the thread about to open a channel."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for chan, taken in pending.items():
            with contextlib.suppress(Exception):
                chan.shutdown_write()
            taken.set()


def close_socket(sock: socket.socket) -> None:
    """Shut down and close: the shutdown makes the peer see EOF even if a dup lingers."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


class Connections:
    """The tunnel's open connections and its traffic counters, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[Connection] = set()
        self.bytes_up = self.bytes_down = self.total = self.refused = 0

    def accepted(self) -> None:
        with self._lock:
            self.total += 1

    def was_refused(self) -> None:
        with self._lock:
            self.refused += 1

    def moved(self, up: int, down: int) -> None:
        with self._lock:
            self.bytes_up += up
            self.bytes_down += down

    def add(self, conn: Connection, closing: threading.Event) -> bool:
        """Track ``conn``; False (and ``conn`` aborted) when the tunnel is closing."""
        with self._lock:
            if closing.is_set():
                conn.abort()
                return False
            self._open.add(conn)
            return True

    def release(self, conn: Connection) -> None:
        """Close both ends once every pump of ``conn`` is done, and forget it."""
        if conn.part_done():
            conn.finish()
            with self._lock:
                self._open.discard(conn)

    def abort_all(self) -> None:
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            conn.abort()

    def active(self) -> int:
        with self._lock:
            return len(self._open)
