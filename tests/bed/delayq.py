"""Delaying NFQUEUE reader: the "long wire" of the test bed's WAN link.

This kernel has no ``tc netem`` (only htb, tbf and fifo qdiscs), so latency is
added in user space: an iptables rule on the receiving namespace's INPUT chain
sends the peer's packets to an NFQUEUE, and this process holds every packet for
``--delay-ms`` before accepting it.  One reader runs in each namespace, each with
half the round trip, so TCP sees a real, symmetric round-trip time.

Why it is shaped like this:

- **One thread, one FIFO.**  Every packet gets the same delay, so arrival order
  is due order: a deque is enough, and releasing from its head keeps packet
  order (reordering would make TCP retransmit and distort benchmarks).
- **Verdicts outside the callback.**  NetfilterQueue (>= 1.0) lets a
  :class:`Packet` be accepted after its callback returned; the loop waits in
  ``select`` with a timeout equal to the time until the head packet is due.
- **Metadata only** (``COPY_META``): the verdict needs the packet id, never the
  payload, so nothing is copied to user space.  This is most of the throughput.
- **Big queue, big netlink buffer**: the kernel drops a packet (there is no
  ``--queue-bypass``, on purpose, so nothing skips the delay) when the queue is
  full or the netlink socket overflows; at 1 GB/s and 25 ms one way, hundreds of
  64 KiB packets are in flight at once.

Runnable as ``python -m tests.bed.delayq`` or as a script path (it imports only
the standard library and ``netfilterqueue``), normally via
``ip netns exec NS python .../delayq.py --queue N --delay-ms D``.  It prints
``ready`` on stdout once bound, and counters on stderr when it ends (SIGTERM or
SIGINT).
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import sys
import time
from types import FrameType
from typing import Any

READY_LINE = "ready"

# Packets the kernel may hold for this queue before it drops new ones.  A
# 64 KiB-MTU link at ~2 GB/s with 25 ms one way holds ~800 packets; a 1500-MTU
# one at 150 MB/s ~2,500.  Memory is only used while packets wait.
DEFAULT_MAX_LEN = 65536
# Netlink receive buffer (the kernel doubles it).  Metadata-only messages are
# well under 1 KiB each in truesize, so this holds a full queue's notices.
DEFAULT_SOCK_LEN = 32 * 1024 * 1024
# Longest select() wait while idle, so a stop request is noticed promptly even
# if the signal arrives between the flag check and the wait.
_IDLE_WAIT_S = 0.2


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="delayq", description="Delay every packet of an NFQUEUE by a fixed time."
    )
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number to bind")
    parser.add_argument(
        "--delay-ms", type=float, required=True, help="one-way delay added to every packet"
    )
    parser.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    parser.add_argument("--sock-len", type=int, default=DEFAULT_SOCK_LEN)
    return parser.parse_args(argv)


def run(queue_num: int, delay_s: float, *, max_len: int, sock_len: int) -> dict[str, int]:
    """Bind ``queue_num`` and delay packets until SIGTERM/SIGINT; return counters.

    Packets still held when asked to stop are accepted at once rather than
    dropped: the link is going away, and a clean stop must not look like loss.
    """
    from netfilterqueue import COPY_META, NetfilterQueue

    held: collections.deque[tuple[float, Any]] = collections.deque()
    append = held.append
    now = time.monotonic

    def on_packet(pkt: Any) -> None:
        # The only work done per packet in the callback: stamp and enqueue.
        append((now() + delay_s, pkt))

    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    nfq = NetfilterQueue()
    # range=0: with COPY_META no payload is copied anyway.
    nfq.bind(queue_num, on_packet, max_len=max_len, mode=COPY_META, range=0, sock_len=sock_len)
    fd = nfq.get_fd()
    received = 0
    accepted = 0
    max_held = 0
    print(READY_LINE, flush=True)
    try:
        while not stop:
            if held:
                wait = held[0][0] - now()
                if wait > _IDLE_WAIT_S:
                    wait = _IDLE_WAIT_S
            else:
                wait = _IDLE_WAIT_S
            if wait > 0:
                readable, _, _ = select.select([fd], [], [], wait)
            else:
                readable = [fd]
            if readable:
                before = len(held)
                # Drains everything queued on the socket without blocking.
                nfq.run(block=False)
                received += len(held) - before
                if len(held) > max_held:
                    max_held = len(held)
            t = now()
            while held and held[0][0] <= t:
                held.popleft()[1].accept()
                accepted += 1
    finally:
        while held:
            held.popleft()[1].accept()
            accepted += 1
        nfq.unbind()
    return {"received": received, "accepted": accepted, "max_held": max_held}


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse flags, run until stopped, report counters on stderr."""
    args = _parse_args(argv)
    if args.delay_ms < 0:
        print("delayq: --delay-ms must be >= 0", file=sys.stderr)
        return 2
    counters = run(args.queue, args.delay_ms / 1000.0, max_len=args.max_len, sock_len=args.sock_len)
    print(
        f"delayq: queue {args.queue} delay {args.delay_ms} ms: {counters}",
        file=sys.stderr,
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
