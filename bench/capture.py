"""Count round trips on the wire: a packet capture on the near end of the WAN link.

Why not time / RTT alone: on this shared two-core machine a run's CPU time varies by
hundreds of milliseconds, several round trips' worth, so a time difference between a 0 ms
and a 50 ms link says little. The wire does not lie: a round trip is a wait in which the
near side sent something and then heard nothing until the far side answered.

How: an AF_PACKET socket on the near namespace's link device sees every packet of the
link (the link carries nothing but the benchmark's own traffic). The round trips are the
length of the chain of causes behind the last answer (`round_trips`): an answer coming in
was caused by the latest packet that went out early enough to have reached the far side
first, and that packet by the latest answer that had reached the near side before it left,
and so on back to the first packet. Each out-then-in step is one round trip. The near
side's own work (Python, key signing) and the far side's (a command running) lengthen the
steps without adding any, and packets off the chain (a server's unsolicited notice, a
background channel) are not counted. The capture sits at the device, before the near
side's delay queue: an answer is seen one one-way delay after its question left, and is
delivered one one-way delay after it is seen. Checked against a TCP ping-pong: n exchanges
count n, plus one for the connect and one for the close.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Packet:
    t: float  # time.time() when read
    outgoing: bool
    src_port: int
    dst_port: int
    flags: int
    payload: int


@dataclass
class Capture:
    """Packets of one network namespace's device, read in a thread until `stop()`."""

    netns: str
    device: str
    near_addr: str
    packets: list[Packet] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Capture:
        from tests.bed.wan import in_netns

        eth_p_all = 0x0003
        with in_netns(self.netns):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(eth_p_all))
        sock.bind((self.device, 0))
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._read, name="capture", daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._sock is not None
        near = socket.inet_aton(self.near_addr)
        while not self._stop.is_set():
            try:
                frame = self._sock.recv(256)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.time()
            if len(frame) < 34 or frame[12:14] != b"\x08\x00":
                continue  # not IPv4
            ip = frame[14:]
            ihl = (ip[0] & 0x0F) * 4
            total = struct.unpack("!H", ip[2:4])[0]
            if ip[9] != 6 or len(ip) < ihl + 14:
                continue  # not TCP
            tcp = ip[ihl:]
            src_port, dst_port = struct.unpack("!HH", tcp[:4])
            offset = (tcp[12] >> 4) * 4
            flags = tcp[13]
            payload = total - ihl - offset
            self.packets.append(
                Packet(now, ip[12:16] == near, src_port, dst_port, flags, max(0, payload))
            )

    def stop(self) -> list[Packet]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        return list(self.packets)


#: Slack on the one-way delay when matching causes: the delay reader releases packets a
#: little late, never early.
TOLERANCE = 0.8


def round_trips(
    packets: list[Packet], one_way_s: float, start: float | None = None, end: float | None = None
) -> int:
    """Round trips on the chain of causes behind the last packet that came in between
    `start` and `end` (time.time()), counted back no further than `start`."""
    chosen = [
        p for p in packets if (start is None or p.t >= start) and (end is None or p.t <= end)
    ]
    incoming = [p for p in chosen if not p.outgoing]
    outgoing = [p for p in chosen if p.outgoing]
    if not incoming:
        return 0
    reach = one_way_s * TOLERANCE
    current = incoming[-1]
    count = 0
    while True:
        # The packet that went out in time to cause this answer: the latest such.
        causes = [o for o in outgoing if o.t <= current.t - reach]
        if not causes:
            return count
        cause = causes[-1]
        count += 1
        # What the near side had heard before it sent that: the latest answer delivered.
        heard = [i for i in incoming if i.t <= cause.t - reach]
        if not heard:
            return count
        current = heard[-1]
