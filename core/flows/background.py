"""The notebook tunnel: in this process, or detached in a background process per instance.

`open_notebook_tunnel` is the one way `launch`, `start` and `tunnel` open it.

`launch --detach` and `tunnel NAME --detach` start `python -m orchestrate.core.flows.background
NAME PORT`; it connects with the pinned host key (and, for `launch --detach` on a host
set up before, runs the launch's probe first: `tunnel_start`), opens the tunnel, writes its
pid and port to the state row, says "ready PORT" to its parent and then runs until SIGTERM
(`tunnel NAME --close`, `stop`, `down`). A pid is only signalled after checking its command
line, so a recycled pid is never killed.

A tunnel held in the foreground (`launch`, `start`, `tunnel NAME` without --detach) is in the
row too, for as long as it is open (`held_in_foreground`): `status` and `open` describe the
tunnel that is alive, whichever process holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import OrchestrateError
from orchestrate.core.flows.tunnel_start import MODULE, DetachedStart, Say, encode_error
from orchestrate.core.store.state import InstanceRow

__all__ = ["MODULE", "DetachedStart"]


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_our_tunnel(pid: int | None, name: str) -> bool:
    """True when `pid` is alive and is the background tunnel of instance `name`."""
    if not pid:
        return False
    args = _cmdline(pid)
    return MODULE in args and name in args


def _holder_path(name: str, pid: int) -> Path:
    """The file a foreground tunnel's process keeps locked while its tunnel is open."""
    from orchestrate.core.store.paths import private_dir, state_dir

    return private_dir(state_dir() / "tunnels") / f"{name}.{pid}.lock"


def is_foreground_tunnel(pid: int | None, name: str) -> bool:
    """True when `pid` holds `name`'s tunnel in the foreground now.

    The holder keeps a lock on its file; the kernel drops the lock when the process ends in
    any way (Ctrl-C, SIGTERM, SIGKILL, a crash), so a dead holder reads as no tunnel, and a
    recycled pid cannot pass for one: the lock, not the pid, says it is alive.
    """
    if not pid:
        return False
    path = _holder_path(name, pid)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    path.unlink(missing_ok=True)  # left by a holder that was killed
    return False


def tunnel_kind(row: InstanceRow) -> str | None:
    """ "detached" or "foreground" when the row's tunnel is alive, else None."""
    if is_our_tunnel(row.tunnel_pid, row.name):
        return "detached"
    if is_foreground_tunnel(row.tunnel_pid, row.name):
        return "foreground"
    return None


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (the terminal closed) while a foreground tunnel is open: it ends as
    Ctrl-C does, so the tunnel closes and the row forgets it before the process exits."""


def _end_as_interrupt(signum: int, frame: Any) -> None:
    raise _Terminated(signal.Signals(signum).name)


@contextmanager
def held_in_foreground(state: Any, name: str, local_port: int) -> Iterator[None]:
    """Record this process's open tunnel in `name`'s row for the `with` block.

    Without it `status` showed no tunnel while a foreground one served the notebook. The
    row names this pid and port; the lock on the holder file says the pid is alive and is
    this tunnel (`is_foreground_tunnel`). On the way out the row is cleared unless another
    tunnel took it over meanwhile.
    """
    import threading

    pid = os.getpid()
    path = _holder_path(name, pid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    handlers: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for ending in (signal.SIGTERM, signal.SIGHUP):
            handlers[ending] = signal.signal(ending, _end_as_interrupt)
    try:
        state.update(name, tunnel_pid=pid, local_port=local_port)
        yield
    finally:
        for ending, handler in handlers.items():
            signal.signal(ending, handler)
        current = state.get(name)
        if current is not None and current.tunnel_pid == pid:
            state.update(name, tunnel_pid=None)
        path.unlink(missing_ok=True)
        os.close(fd)


def control_path(name: str) -> Path:
    """Where the background tunnel of `name` lends its SSH connection (`core/ssh/control`)."""
    from orchestrate.core.store.paths import private_dir, state_dir

    return private_dir(state_dir() / "control") / f"{name}.sock"


def check_port(row: InstanceRow | None, port: int, *, explicit: bool) -> None:
    """Refuse a busy port the user chose, before anything is created, started or closed.

    The tunnel binds last, after the instance is created and set up and after the old
    tunnel is closed; finding the port taken only then leaves an instance billing and no
    tunnel. A port held by this instance's own tunnel is not busy: it is about to be
    replaced. A port from the profile moves on to the next free one instead (`bind_listener`).
    """
    if not explicit:
        return
    if row is not None and row.local_port == port and is_our_tunnel(row.tunnel_pid, row.name):
        return
    from orchestrate.core.ssh.ports import bind_listener

    bind_listener("127.0.0.1", port, explicit=True).close()


def open_tunnel(
    runtime: Any, session: Any, local_port: int, remote_port: int, *, explicit: bool
) -> Any:
    """The first plugin's tunnel, else core's paramiko forwarder."""
    tunnel = runtime.pm.hook.orchestrate_open_tunnel(
        session=session,
        local_port=local_port,
        remote_host="127.0.0.1",
        remote_port=remote_port,
        port_explicit=explicit,
    )
    if tunnel is not None:
        return tunnel
    from orchestrate.core.ssh.tunnel import open_default_tunnel

    return open_default_tunnel(
        session, local_port, "127.0.0.1", remote_port, port_explicit=explicit
    )


#: The key of a cluster head's `InstanceRow.extra` with the local port of Ray's dashboard.
DASHBOARD_KEY = "dashboard_port"


def open_dashboard(runtime: Any, session: Any, name: str, cluster: Any = None) -> Any:
    """The second forward of a cluster's head: a local port to Ray's dashboard on the
    head's 127.0.0.1 (never published beyond it). The port it had before, else Ray's own
    number, else the next free one; stored in the row so `status` can show it."""
    from orchestrate.core.api.hoststeps import ClusterContext

    remote = cluster.dashboard_port if cluster is not None else ClusterContext.dashboard_port
    state = runtime.state()
    row = state.get(name)
    wanted = int((row.extra if row is not None else {}).get(DASHBOARD_KEY) or remote)
    tunnel = open_tunnel(runtime, session, wanted, remote, explicit=False)
    current = state.get(name)
    if current is not None:
        state.update(name, extra={**current.extra, DASHBOARD_KEY: tunnel.local_port})
    return tunnel


def detached_dashboard_port(row: InstanceRow | None) -> int | None:
    """The dashboard's local port a background tunnel of a cluster head stored."""
    if row is None or not is_our_tunnel(row.tunnel_pid, row.name):
        return None
    value = row.extra.get(DASHBOARD_KEY)
    return int(value) if value else None


def is_cluster_head(row: InstanceRow) -> bool:
    return row.cluster is not None and row.node_index == 0


def wanted_port(row: InstanceRow, port: int | None) -> int:
    """The local port for `row`'s tunnel (`start`, `tunnel`): `--port` when given, else the
    port its last tunnel had (the user's bookmark), else the profile's."""
    return port or row.local_port or row.launched_profile().port


@dataclass(frozen=True)
class NotebookTunnel:
    """An open notebook tunnel: its local port, and the tunnel object when it runs in this
    process (None: a background process holds it, recorded in the state row)."""

    local_port: int
    tunnel: Any | None


def open_notebook_tunnel(
    runtime: Any,
    row: InstanceRow,
    session: Any | None,
    port: int,
    remote_port: int,
    *,
    explicit: bool,
    detach: bool,
) -> NotebookTunnel:
    """The tunnel to `row`'s notebook on `port`: detached (replacing the row's background
    tunnel), or in this process over `session` (required then)."""
    # One tunnel per instance: a background one still alive would keep the port this one
    # wants, and this one would quietly take the next port while `status` named the old.
    close_detached(row)
    if detach:
        return NotebookTunnel(start_detached(row.name, port, explicit=explicit), None)
    assert session is not None, "an in-process tunnel runs over an open session"
    tunnel = open_tunnel(runtime, session, port, remote_port, explicit=explicit)
    return NotebookTunnel(tunnel.local_port, tunnel)


@contextmanager
def reopen(
    runtime: Any,
    row: InstanceRow,
    port: int | None,
    *,
    detach: bool,
    progress: Callable[[str], None],
) -> Iterator[NotebookTunnel]:
    """`tunnel NAME`: the notebook tunnel of a running instance again, on `port`, else the
    port it had, else the profile's. The SSH session of an in-process tunnel lives as long
    as the `with` block."""
    launched = row.launched_profile()
    wanted = wanted_port(row, port)
    explicit = port is not None
    check_port(row, wanted, explicit=explicit)
    if detach:
        opened = open_notebook_tunnel(
            runtime, row, None, wanted, launched.remote_port, explicit=explicit, detach=True
        )
        dashboard_port = detached_dashboard_port(runtime.state().get(row.name))
        if dashboard_port:
            progress(f"dashboard: http://localhost:{dashboard_port}")
        yield opened
        return
    from orchestrate.core.flows.rows import connect
    from orchestrate.core.ssh.keys import ensure_ssh_key

    session = connect(runtime, row.name, ensure_ssh_key(), progress)
    dashboard = None
    try:
        opened = open_notebook_tunnel(
            runtime, row, session, wanted, launched.remote_port, explicit=explicit, detach=False
        )
        if is_cluster_head(row):
            # A cluster head's tunnel also forwards Ray's dashboard, as `launch` opens it.
            dashboard = open_dashboard(runtime, session, row.name)
            progress(f"dashboard: http://localhost:{dashboard.local_port}")
        with held_in_foreground(runtime.state(), row.name, opened.local_port):
            yield opened
    finally:
        if dashboard is not None:
            dashboard.close()
        session.close()


def start_detached(name: str, port: int, *, explicit: bool, timeout_s: float = 60.0) -> int:
    """Start the background tunnel for `name`; return the local port it bound."""
    return DetachedStart(name, port, explicit=explicit).wait(timeout_s)


def close_detached(row: InstanceRow, *, timeout_s: float = 10.0) -> bool:
    """End the instance's background tunnel if it runs; True when one was ended."""
    pid = row.tunnel_pid
    if not is_our_tunnel(pid, row.name):
        return False
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and is_our_tunnel(pid, row.name):
        time.sleep(0.05)
    if is_our_tunnel(pid, row.name):
        os.kill(pid, signal.SIGKILL)
    return True


def _serve(name: str, port: int, explicit: bool, say: Say, probe: dict[str, Any] | None) -> int:
    """Connect, run the launch's `probe` first when given (before the tunnel's own start-up
    traffic, which would lengthen the launch's wait), then serve the tunnel."""
    from orchestrate.core.flows.rows import connect
    from orchestrate.core.ssh.keys import ensure_ssh_key
    from orchestrate.core.wiring.registry import build_manager
    from orchestrate.core.wiring.runtime import Runtime

    runtime = Runtime(pm=build_manager())
    state = runtime.state()
    row = state.get(name)
    if row is None:
        raise OrchestrateError(f"no instance named {name!r}")
    quiet = probe is None  # a plain `tunnel --detach` says only "ready"

    def progress(message: str) -> None:
        if not quiet:
            say("progress", message)

    session = connect(runtime, name, ensure_ssh_key(), progress)
    if probe is not None:
        from orchestrate.core.host.probe import run_probe

        result = run_probe(session, str(probe["command"]), str(probe["stdin"]))
        say(
            "probe", json.dumps({"rc": result.rc, "stdout": result.stdout, "stderr": result.stderr})
        )
    tunnel = open_tunnel(
        runtime,
        session,
        port,
        row.launched_profile().remote_port,
        explicit=explicit,
    )
    dashboard = open_dashboard(runtime, session, name) if is_cluster_head(row) else None
    control = _lend(session, name, row, tunnel.local_port)
    stopping = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if control is not None:
            control.close()
        if dashboard is not None:
            dashboard.close()
        tunnel.close()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    state.update(name, tunnel_pid=os.getpid(), local_port=tunnel.local_port)
    # The launch that started us may have died before reading this (a relaunch starts the
    # tunnel early, see `DetachedStart`): `say` then serves anyway, as a detached tunnel was
    # asked for; the row names this process, so `status` shows it and `down` ends it.
    say("ready", str(tunnel.local_port))
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        while not tunnel.wait(1.0):
            pass
    finally:
        if control is not None:
            control.close()
        if dashboard is not None:
            dashboard.close()
        tunnel.close()
        session.close()
        current = state.get(name)
        if current is not None and current.tunnel_pid == os.getpid():
            state.update(name, tunnel_pid=None)
        runtime.close()
    error = getattr(tunnel, "error", None)
    if error is not None and not stopping:
        sys.stderr.write(f"tunnel ended: {error}\n")
        return 1
    return 0


def _lend(session: Any, name: str, row: InstanceRow, local_port: int) -> Any:
    """Serve this tunnel's connection to the instance's other commands, when the state dir
    allows a socket path there (else they connect on their own, as before)."""
    from orchestrate.core.ssh.control import ControlServer, usable_path

    path = control_path(name)
    if not usable_path(path):
        return None
    hello = {
        "address": session.address,
        "port": session.port,
        "user": session.user,
        "host_key": session.host_key,
        "local_port": local_port,
        "remote_port": row.launched_profile().remote_port,
    }
    return ControlServer(session, path, hello)


def main(argv: list[str]) -> int:
    from orchestrate.core.ssh.heap import cap_arenas

    cap_arenas()  # before any thread: a process that lives for days must not creep (heap.py)
    name, port = argv[0], int(argv[1])
    say = Say(sys.stdout)
    probe = None
    if "--probe" in argv[2:]:
        # The launch's probe, token included, comes on stdin: never on a command line.
        probe = json.loads(sys.stdin.readline() or "{}")
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    try:
        return _serve(name, port, "--explicit" in argv[2:], say, probe)
    except OrchestrateError as exc:
        say("error", encode_error(exc))
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
