"""Run `orchestrate ARGS` with its network steps timed and counted, for B2's round trips.

    python -m bench.trace OUT.json ARGS...

Wraps, in this process only, the calls that cost round trips on a WAN link: the TCP
connect of the SSH session, the SSH handshake (version + key exchange) and authentication,
each channel open (``session`` for a command, ``direct-tcpip`` for a tunnelled
connection), each exec request, each remote command (`Session.run`), each HTTP request to
Jupyter, plus the launch phases (cloud, connect, host setup, tunnel, Jupyter check). Writes
every event with wall-clock start and end to OUT.json when the CLI ends (also on Ctrl-C).
The product's code is not changed; the wrappers only take the time.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EVENTS: list[dict[str, Any]] = []
_LOCK = threading.Lock()


def _wrap(
    owner: Any,
    attr: str,
    kind: str,
    label: Callable[..., str] | None = None,
    peer: Callable[..., str] | None = None,
) -> None:
    """Time `owner.attr`; `label` says what the call was, `peer` which host it went to (a
    cluster's launch talks to several)."""
    original = getattr(owner, attr)

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        ok = True
        try:
            return original(*args, **kwargs)
        except BaseException:
            ok = False
            raise
        finally:
            event = {"kind": kind, "start": start, "end": time.time(), "ok": ok}
            for key, name in (("what", label), ("peer", peer)):
                if name is not None:
                    with contextlib.suppress(Exception):  # a label never breaks the call
                        event[key] = name(*args, **kwargs)
            with _LOCK:
                EVENTS.append(event)

    setattr(owner, attr, timed)


def install() -> None:
    import http.client

    import orchestrate.core.flows.background as background
    import orchestrate.core.flows.launch as launch
    import orchestrate.core.host.jupyter as jupyter
    import orchestrate.core.ssh.session as session
    import paramiko

    def transport_peer(self: Any, *a: Any, **k: Any) -> str:
        return str(self.getpeername()[0])

    def channel_peer(self: Any, *a: Any, **k: Any) -> str:
        return str(self.get_transport().getpeername()[0])

    _wrap(session, "_tcp_socket", "tcp-connect", peer=lambda address, *a, **k: str(address))
    _wrap(paramiko.Transport, "start_client", "ssh-handshake", peer=transport_peer)
    _wrap(paramiko.Transport, "auth_publickey", "ssh-auth", peer=transport_peer)
    _wrap(
        paramiko.Transport,
        "open_channel",
        "channel-open",
        label=lambda self, kind, *a, **k: str(kind),
        peer=transport_peer,
    )
    _wrap(paramiko.Channel, "exec_command", "exec", peer=channel_peer)
    _wrap(
        session.Session,
        "run",
        "run",
        label=lambda self, command, **k: command[:60],
        peer=lambda self, *a, **k: str(self.address),
    )
    _wrap(
        http.client.HTTPConnection,
        "getresponse",
        "http",
        label=lambda self, *a, **k: f"{self.host}:{self.port}",
    )
    # Phases: the names `bring_up` calls, so the patched module attributes are the ones used.
    import orchestrate.core.cloud.instances as instances

    _wrap(instances, "ensure_running", "phase:cloud")
    _wrap(launch, "connect", "phase:connect")
    _wrap(
        launch,
        "setup_host",
        "phase:setup",
        peer=lambda runtime, session, *a, **k: str(session.address),
    )
    _wrap(background, "open_tunnel", "phase:tunnel-open")
    _wrap(background, "start_detached", "phase:tunnel-detached")
    _wrap(jupyter, "wait_ready", "phase:jupyter")


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    started = time.time()

    def dump() -> None:
        with _LOCK:
            events = list(EVENTS)
        out.write_text(json.dumps({"started": started, "events": events}, indent=1))

    atexit.register(dump)
    install()
    from orchestrate.core.app.cli import main as cli_main

    try:
        return cli_main(argv[1:])
    finally:
        dump()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
