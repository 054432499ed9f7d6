"""Watching the tunnel's SSH transport: notice that it died, bring a new one, or give up.

paramiko has no callback for a dead transport, so the watch polls ``is_active()`` twice a
second, and at once when told (`TransportWatch.wake`: a channel open failed with a transport
error). A new transport comes from the caller's ``reconnect`` under the tunnel's bounded
`Backoff` (`tunnel_link.reconnect_with`); after the last attempt the tunnel fails for good
and says so, rather than retrying forever behind the user's back.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrate.core.ssh.tunnel_link import Reconnect, reconnect_with
from orchestrate.core.ssh.tunnel_tuning import Backoff

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko


class TransportWatch:
    """`run` is the watching thread. ``current()`` is the transport in use; ``alive()`` is
    called on each look that finds it up; ``lost()`` once it died; ``replaced(fresh)`` with
    a new live transport (False: the tunnel is closing, stop); ``failed(why)`` when giving up.
    """

    def __init__(
        self,
        *,
        current: Callable[[], paramiko.Transport | None],
        reconnect: Reconnect | None,
        backoff: Backoff,
        closing: threading.Event,
        alive: Callable[[], None],
        lost: Callable[[], None],
        replaced: Callable[[paramiko.Transport], bool],
        failed: Callable[[str], None],
    ) -> None:
        self._current = current
        self._reconnect = reconnect
        self._backoff = backoff
        self._closing = closing
        self._alive = alive
        self._lost = lost
        self._replaced = replaced
        self._failed = failed
        self._wake = threading.Event()

    def wake(self) -> None:
        """Look now (the transport may be dead), and end the wait of a closing tunnel."""
        self._wake.set()

    def run(self) -> None:
        while not self._closing.is_set():
            self._wake.wait(timeout=0.5)
            self._wake.clear()
            if self._closing.is_set():
                return
            transport = self._current()
            if transport is not None and transport.is_active():
                self._alive()
                continue
            self._lost()
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
            if not self._replace():
                return

    def _replace(self) -> bool:
        """A new transport from ``reconnect``; False when the tunnel gave up or closes."""
        if self._reconnect is None:
            self._failed("the ssh connection under the tunnel closed and no reconnect was given")
            return False
        try:
            fresh = reconnect_with(self._reconnect, self._backoff, self._closing)
        except Exception as last:  # any failure is one failed attempt; the last is shown
            if not self._closing.is_set():
                self._failed(
                    f"the tunnel lost its ssh connection and {self._backoff.attempts} reconnect "
                    f"attempts failed (last: {last})"
                )
            return False
        return self._replaced(fresh)
