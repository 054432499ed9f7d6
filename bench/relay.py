"""A loopback relay from a test namespace into this one: the far host's own 127.0.0.1.

Why it exists (B2's topology): the "VM" at the far end of the WAN link is an sshd in the
far network namespace, but the Docker engine it drives (`sudo docker` through the shared
/var/run/docker.sock) is the root namespace's, so the notebook container publishes on the
*root* namespace's 127.0.0.1:PORT. On a real VM sshd and docker-proxy share one loopback.
This relay gives the far namespace that loopback: it listens on 127.0.0.1:PORT inside the
far namespace and copies each connection to 127.0.0.1:PORT here. It sits after the WAN
link (between sshd and Jupyter, both "on the VM"), so it adds no round trip to the link.

    python -m bench.relay --netns NS --port PORT    # prints "ready", runs until SIGTERM
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass

from orchestrate.core.flows.processes import end_child

from bench.common import ROOT


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until either side closes; one thread per connection."""
    try:
        sockets = [a, b]
        while True:
            readable, _, _ = select.select(sockets, [], [], 60)
            if not readable:
                continue
            for sock in readable:
                data = sock.recv(262144)
                if not data:
                    return
                (b if sock is a else a).sendall(data)
    except OSError:
        return
    finally:
        a.close()
        b.close()


def serve(argv: list[str] | None = None) -> int:
    from tests.bed.wan import socket_in_netns

    parser = argparse.ArgumentParser(prog="bench.relay")
    parser.add_argument("--netns", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    listener = socket_in_netns(args.netns)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.is_set():
        readable, _, _ = select.select([listener], [], [], 0.2)
        if not readable:
            continue
        inner, _ = listener.accept()
        try:
            outer = socket.create_connection(("127.0.0.1", args.port), timeout=10)
        except OSError:
            inner.close()  # nothing listens yet: refuse, as a closed port would
            continue
        for sock in (inner, outer):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(None)
        threading.Thread(target=_pump, args=(inner, outer), daemon=True).start()
    listener.close()
    return 0


@dataclass
class Relay:
    """The relay process (ours: stopped by its PID)."""

    proc: subprocess.Popen[str]

    @classmethod
    def start(cls, netns: str, port: int) -> Relay:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.relay", "--netns", netns, "--port", str(port)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        if not ready or proc.stdout.readline().strip() != "ready":
            proc.kill()
            proc.wait(timeout=10)
            raise RuntimeError("the loopback relay did not start")
        return cls(proc)

    def stop(self) -> None:
        end_child(self.proc)


if __name__ == "__main__":
    sys.exit(serve())
