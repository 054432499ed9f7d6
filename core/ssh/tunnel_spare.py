"""The tunnel's pre-opened channel: one channel to the notebook, opened ahead of need.

Opening a channel costs a round trip to the host before the first byte can go: on a 50 ms
link that is half of a new connection's time. So, on a slow link, the tunnel keeps one
channel open in advance and hands it to the next local connection, which then costs one
round trip (its request and answer) instead of two; a replacement is opened as soon as that
request is through (`SpareChannel.first_bytes`). Measured on the 50 ms link: a new connection
52.6 ms, OpenSSH 152.6 ms. The remote just sees one idle connection; a spare the remote
closed, or older than `SPARE_MAX_AGE_S`, is replaced, never handed out.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrate.core.ssh.tunnel_tuning import SPARE_MAX_AGE_S, SPARE_REPLACE_AFTER_S

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko


class SpareChannel:
    """Keeps one pre-opened channel; `run` is its thread, `take` hands the channel out.

    ``open_channel(transport)`` opens one (paramiko's errors pass); ``current()`` is the
    transport to use now, None while the tunnel is not up; ``prepare()`` runs before each
    open (the tunnel's once-per-transport set-up); ``worth_it()`` says whether the link is
    slow enough for a spare to pay; ``on_link_error()`` tells the tunnel its transport may
    be dead; ``on_settled()`` that the start-up work is done.
    """

    def __init__(
        self,
        *,
        open_channel: Callable[[paramiko.Transport], paramiko.Channel],
        current: Callable[[], paramiko.Transport | None],
        prepare: Callable[[], None],
        worth_it: Callable[[], bool],
        on_link_error: Callable[[], None],
        on_settled: Callable[[], None],
        open_timeout_s: float,
    ) -> None:
        self._open_channel = open_channel
        self._current = current
        self._prepare = prepare
        self._worth_it = worth_it
        self._on_link_error = on_link_error
        self._on_settled = on_settled
        self._open_timeout_s = open_timeout_s
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._wanted = threading.Event()
        self._closed = threading.Event()
        self._chan: paramiko.Channel | None = None
        self._transport: paramiko.Transport | None = None
        self._born = 0.0
        self._opening = False  # an open is in flight
        self._claimed = False  # a new connection waits for that in-flight open
        self._blocked = False  # the remote refused: no spares until a forward works
        self._due: float | None = None  # when to replace a taken spare at the latest

    def want(self) -> None:
        """Look again now (started, reconnected)."""
        self._wanted.set()

    def unblock(self) -> None:
        """A forward worked again after a refusal: pre-open anew."""
        if self._blocked:
            with self._lock:
                self._blocked = False
            self._wanted.set()

    def take(self, transport: paramiko.Transport) -> paramiko.Channel | None:
        """The spare for a new connection on ``transport``, if one is (nearly) ready.

        When the replacement's open is still in flight, waiting for it beats opening
        another (it was sent earlier).
        """
        with self._lock:
            if self._chan is None and self._opening and not self._claimed:
                self._claimed = True
                deadline = time.monotonic() + self._open_timeout_s
                while self._opening and not self._closed.is_set():
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._ready.wait(timeout=left)
                self._claimed = False
            chan, self._chan = self._chan, None
            fresh = (
                chan is not None
                and self._transport is transport
                and time.monotonic() - self._born < SPARE_MAX_AGE_S
            )
            if chan is not None and fresh:
                # Replace it once this connection's first bytes are through (first_bytes).
                self._due = time.monotonic() + SPARE_REPLACE_AFTER_S
        self._wanted.set()
        if chan is None:
            return None
        if not fresh or chan.closed or chan.eof_received:
            with contextlib.suppress(Exception):
                chan.close()
            return None
        return chan

    def first_bytes(self) -> None:
        """A connection's first bytes went through: replace the spare it took now.

        Right after the request, not before it (the open would compete with it) and not
        after the answer (one round trip later, when the next connection may already want
        the replacement).
        """
        with self._lock:
            if self._due is None:
                return
            self._due = time.monotonic()
        self._wanted.set()

    def close(self) -> None:
        """Stop the thread, close the held channel, release a connection waiting for one."""
        self._closed.set()
        self._wanted.set()
        with self._lock:
            chan, self._chan = self._chan, None
            self._ready.notify_all()
        if chan is not None:
            with contextlib.suppress(Exception):
                chan.close()

    def run(self) -> None:
        """Keep one channel pre-opened until `close`."""
        while not self._closed.is_set():
            with self._lock:
                due = self._due
            timeout = SPARE_MAX_AGE_S / 2 if due is None else max(0.0, due - time.monotonic())
            self._wanted.wait(timeout=timeout)
            self._wanted.clear()
            if self._closed.is_set():
                return
            with self._lock:
                if self._due is not None:
                    if time.monotonic() < self._due:
                        continue  # woken early by the take itself: wait for first bytes
                    self._due = None
            self._prepare()
            self._refill()

    def _refill(self) -> None:
        """Drop a stale spare; open a new one if none is held and one is worth it."""
        import paramiko

        stale: paramiko.Channel | None = None
        with self._lock:
            transport = self._current()
            spare = self._chan
            if spare is not None and (
                self._transport is not transport
                or spare.closed
                or spare.eof_received
                or time.monotonic() - self._born >= SPARE_MAX_AGE_S
            ):
                stale, self._chan = spare, None
            need = (
                transport is not None
                and self._chan is None
                and not self._blocked
                and self._worth_it()
            )
            self._opening = need
        if stale is not None:
            with contextlib.suppress(Exception):
                stale.close()
        if not need or transport is None:
            self._on_settled()
            return
        chan: paramiko.Channel | None = None
        try:
            chan = self._open_channel(transport)
        except paramiko.ChannelException:
            with self._lock:
                self._blocked = True  # a real connection will find out and retry
        except (paramiko.SSHException, OSError, EOFError):
            self._on_link_error()
        self._on_settled()
        with self._lock:
            self._opening = False
            keep = chan is not None and not self._closed.is_set()
            if keep:
                self._chan = chan
                self._transport = transport
                self._born = time.monotonic()
            self._ready.notify_all()
        if chan is not None and not keep:
            with contextlib.suppress(Exception):
                chan.close()
