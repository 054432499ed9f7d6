"""The tunnel's tuning: every number the forwarder was measured with, in one place.

Each figure was measured with ``bench/tunnel_bench.py`` against ``ssh -N -L`` (numbers:
bench/results/tunnel.json; the runs quoted here on 2 shared CPUs, OpenSSH 9.2). `TunnelTuning`
holds what a caller may change; the module constants are the defaults it starts from and the
limits the pumps and the spare channel use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrate.core.api.retry import Retry
from orchestrate.core.ssh.ports import DEFAULT_PORT_TRIES

#: Receive window of each forwarded channel over a slow link. Measured on the 50 ms link,
#: 100 MB down, 255 KiB packets: 2 MiB 35 MB/s (OpenSSH's window, and OpenSSH's figure),
#: 4 MiB 62, 8 MiB 96, 16 MiB 117, 32 MiB 137; 200 MB at 16 MiB: 175 MB/s. 16 MiB is more
#: than four times OpenSSH; 32 MiB would add a little more at twice the memory a channel
#: may hold when the local reader is slower than the link.
DEFAULT_WINDOW_SIZE = 16 * 1024 * 1024
#: ... and over a fast one (round trip under `LAN_RTT_S`), where 4 MiB already allows
#: 400 MB/s, more than the tunnel carries. On loopback, 200 MB down through the tunnel,
#: 6 rounds alternating: 4 MiB median 158 MB/s, 16 MiB 117 (sshd, on the same CPUs, works
#: harder with the larger window: 0.35 s vs up to 1.7 s of CPU per 200-300 MB, measured).
LAN_WINDOW_SIZE = 4 * 1024 * 1024
#: Round trips shorter than this mean a LAN or loopback: `LAN_WINDOW_SIZE` is enough.
LAN_RTT_S = 0.010
#: Largest SSH packet the host may send us per channel: 255 KiB keeps a whole packet under
#: OpenSSH's 256 KiB limit. Python's cost is per packet: raw paramiko on loopback, 200 MB,
#: 16 MiB window: 32 KiB packets 77-106 MB/s, 128 KiB 205-266, 255 KiB 276-366. On the
#: 50 ms link 32 KiB packets were also held by Nagle (sub-MSS with the bed's 64 KiB MTU).
DEFAULT_MAX_PACKET_SIZE = 255 * 1024

#: Bytes asked of the channel per read. Larger than any window we advertise so one read
#: empties paramiko's buffered pipe (a partial read costs a copy of everything left in it).
RECV_SIZE = 64 * 1024 * 1024
#: Bytes read from the local socket per call: big enough that Python's per-call cost is
#: small next to the copy, small enough to keep the tunnel's memory per connection low.
SOCK_RECV_SIZE = 256 * 1024

#: How long a local EOF waits for a connection accepted at the same moment to send its
#: channel open first (see `tunnel_pump.EofBatcher`): covers accept() waking up and the GIL.
EOF_GRACE_S = 0.005

#: A pre-opened channel older than this is replaced rather than handed out: servers and
#: proxies drop idle connections after minutes (Jupyter's Tornado after an hour).
SPARE_MAX_AGE_S = 120.0
#: A taken spare is replaced as soon as its connection has sent or received its first bytes
#: (so the replacement's open does not compete with them), or after this long at the latest.
SPARE_REPLACE_AFTER_S = 0.005
#: A round trip shorter than this means a fast link (loopback, LAN), where a pre-opened
#: channel saves less than the CPU it costs (measured on loopback: ~0.25 ms of the ~1 ms of
#: CPU per connection, for no gain in latency).
FAST_OPEN_S = 0.003

#: How long a parked worker thread waits for another connection before it ends.
WORKER_IDLE_S = 30.0

#: Keepalive, seconds: an SSH-level ping when idle, and TCP probes plus a user timeout on
#: the transport's socket, so a dead link (laptop asleep, Wi-Fi gone) is found in about a
#: minute rather than TCP's default of many minutes.
DEFAULT_KEEPALIVE_S = 15


@dataclass(frozen=True)
class Backoff(Retry):
    """Bounded exponential backoff between reconnect attempts: the shared `Retry` policy.

    The first attempt is immediate (a single dropped connection is the common case), then
    ``first_s``, doubling up to ``max_s``; after ``attempts`` failures the tunnel gives up and
    says so rather than retrying forever behind the user's back.
    """

    attempts: int | None = 10
    first_s: float = 1.0
    max_s: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (0-based)."""
        return self.wait_after(attempt)

    def budget_s(self) -> float:
        """Every wait added up: how long a whole round of reconnect attempts may take."""
        return sum(self.delays())


@dataclass(frozen=True)
class TunnelTuning:
    """What a caller may change about a tunnel; the defaults are the measured best.

    ``window_size`` None picks the window by link (`Tunnel.channel_window`); ``prewarm`` None
    keeps a pre-opened channel only on a slow link, True always, False never;
    ``prefer_aead`` re-keys to AES-GCM once (see `tunnel_link.rekey_to_aead`).
    """

    window_size: int | None = None
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    keepalive_s: int = DEFAULT_KEEPALIVE_S
    open_timeout_s: float = 15.0
    port_tries: int = DEFAULT_PORT_TRIES
    prewarm: bool | None = None
    prefer_aead: bool = True
    backoff: Backoff = field(default_factory=Backoff)

    def reconnect_budget_s(self) -> float:
        """How long a new local connection may wait for a reconnect before it is dropped."""
        return self.backoff.budget_s() + self.open_timeout_s
