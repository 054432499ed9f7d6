"""The tunnel as the benchmark measures it: core's `Tunnel` with its extras switchable.

Knobs only the benchmark turns (a product user never should), so they live here and not in
``TunnelTuning``: the select() pump, the measured alternative to the threads pump; and the
"untuned" switches that show what each extra buys (no sshd nudge, no read-ahead).
"""

from __future__ import annotations

import logging
import select
from typing import TYPE_CHECKING, Any

from orchestrate.core.ssh.tunnel import Tunnel
from orchestrate.core.ssh.tunnel_link import LinkCare
from orchestrate.core.ssh.tunnel_pump import Connection
from orchestrate.core.ssh.tunnel_tuning import RECV_SIZE, SOCK_RECV_SIZE, TunnelTuning

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)


class BenchTunnel(Tunnel):
    """``pump`` "threads" (core's) or "select"; ``nudge_nodelay`` and ``read_ahead`` False
    leave out those extras."""

    def __init__(
        self,
        *args: Any,
        pump: str = "threads",
        nudge_nodelay: bool = True,
        read_ahead: bool = True,
        **kwargs: Any,
    ) -> None:
        if pump not in ("threads", "select"):
            raise ValueError(f"pump must be 'threads' or 'select', not {pump!r}")
        super().__init__(*args, **kwargs)
        self.pump = pump
        self.link = BenchLinkCare(self.tuning, nudge_nodelay, read_ahead)

    def _serve(self, conn: Connection) -> None:
        if self.pump == "threads":
            super()._serve(conn)
            return
        try:
            pump_select(conn)
        finally:
            self._conns.release(conn)


class BenchLinkCare(LinkCare):
    """Core's `LinkCare` with the sshd nudge and the read-ahead switchable."""

    def __init__(self, tuning: TunnelTuning, nudge_nodelay: bool, read_ahead: bool) -> None:
        super().__init__(tuning)
        self.nudge_nodelay = nudge_nodelay
        self.read_ahead = read_ahead

    def tune_reader(self, transport: paramiko.Transport) -> None:
        if self.read_ahead:
            super().tune_reader(transport)

    def nudge_sshd(self, transport: paramiko.Transport) -> None:
        if self.nudge_nodelay:
            super().nudge_sshd(transport)


def pump_select(conn: Connection) -> None:
    """One thread per connection multiplexing both ways with select().

    paramiko's channel exposes a pipe file descriptor that becomes readable when data
    arrives, so the local socket and the channel can share one select().
    """
    chan, client = conn.chan, conn.client
    up_open = down_open = True
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
            if chan in readable:
                data = chan.recv(RECV_SIZE)
                if data:
                    client.sendall(data)
                    conn.moved(0, len(data))
                else:
                    down_open = False
                    conn.down_done()
            if client in readable:
                data = client.recv(SOCK_RECV_SIZE)
                if data:
                    chan.sendall(memoryview(data))  # type: ignore[arg-type]
                    conn.moved(len(data), 0)
                else:
                    up_open = False
                    conn.up_done()
    except (OSError, EOFError, ValueError) as exc:
        log.debug("select pump ended: %s", exc)
        conn.abort()
