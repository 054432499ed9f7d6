"""Opening the tunnel's channels: ``direct-tcpip`` to the notebook, with a window by link.

Every open is one round trip to the host; the quickest one seen is the link's round trip,
which picks the receive window of the channels after it (`ChannelOpener.window`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from orchestrate.core.ssh.tunnel_pump import EofBatcher
from orchestrate.core.ssh.tunnel_tuning import (
    DEFAULT_WINDOW_SIZE,
    LAN_RTT_S,
    LAN_WINDOW_SIZE,
    TunnelTuning,
)

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko


class ChannelOpener:
    """Opens channels to ``remote_host:remote_port`` and learns the link's round trip.

    ``eofs`` is flushed right before each open, so a pending half-close travels in the same
    segment as the open (see `EofBatcher`).
    """

    def __init__(
        self, remote_host: str, remote_port: int, tuning: TunnelTuning, eofs: EofBatcher
    ) -> None:
        self.remote_host = remote_host
        self.remote_port = remote_port
        self._tuning = tuning
        self._eofs = eofs
        self.open_s = 1.0  # the quickest channel open on this transport: its round trip

    def forget_link(self) -> None:
        """A new transport, maybe over another network: time the round trip anew."""
        self.open_s = 1.0

    def timed(self, round_trip_s: float) -> None:
        """A round trip measured some other way (a keepalive request)."""
        self.open_s = min(self.open_s, round_trip_s)

    def open(self, transport: paramiko.Transport, src: tuple[str, int]) -> paramiko.Channel:
        """Open one channel with the tuned window; paramiko's errors pass."""
        self._eofs.flush()
        window = self.window()
        began = time.monotonic()
        chan = transport.open_channel(
            "direct-tcpip",
            dest_addr=(self.remote_host, self.remote_port),
            src_addr=src,
            window_size=window,
            max_packet_size=self._tuning.max_packet_size,
            timeout=self._tuning.open_timeout_s,
        )
        # The quickest open so far is the round trip: a slow one only met a busy moment
        # (the very first open of a connection often takes a Nagle-delayed 40 ms).
        self.timed(time.monotonic() - began)
        return chan

    def window(self) -> int:
        """The receive window the next channel gets.

        The one in the tuning, or else by link: the window caps a download at window /
        round trip, so a 50 ms link needs `DEFAULT_WINDOW_SIZE`, while on a fast link
        `LAN_WINDOW_SIZE` is plenty and measured faster (a bigger one made sshd, sharing the
        machine on loopback, burn CPU the tunnel needed). Until an open was timed, the link
        counts as slow: mistaking a fast link for a slow one only costs a little.
        """
        if self._tuning.window_size is not None:
            return self._tuning.window_size
        return LAN_WINDOW_SIZE if self.open_s < LAN_RTT_S else DEFAULT_WINDOW_SIZE
