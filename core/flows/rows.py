"""Finding an instance's row by name, and reaching its host.

Every command that acts on an existing instance starts here: `launch` again, `start`,
`stop`, `down`, `status NAME`, `logs`, `ssh` and the detached tunnel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.errors import UsageError

if TYPE_CHECKING:  # the commands import this module at start-up: keep it light
    from orchestrate.core.ssh.keys import SshKey
    from orchestrate.core.store.state import InstanceRow
    from orchestrate.core.wiring.runtime import Runtime

Progress = Callable[[str], None]


def row_named(runtime: Runtime, name: str) -> InstanceRow:
    """The state row called `name`, or a usage error listing the known ones."""
    row = runtime.state().get(name)
    if row is None:
        known = ", ".join(r.name for r in runtime.state().all() if not r.is_worker) or "none"
        raise UsageError(
            f"no instance named {name!r} (known: {known})", hint="see `orchestrate status`"
        )
    if row.is_worker and row.cluster and runtime.state().get(row.cluster) is not None:
        raise UsageError(
            f"{name} is a worker of the cluster {row.cluster}: commands take the cluster's name",
            hint=f"use `{row.cluster}` (e.g. `orchestrate status {row.cluster}`, "
            f"`orchestrate scale {row.cluster} --nodes N`)",
        )
    return row


def connect(
    runtime: Runtime,
    name: str,
    key: SshKey,
    progress: Progress,
    *,
    deadline_s: float | None = None,
) -> Any:
    """An SSH session to the instance's current address, with the host key pinned.

    First contact pins the key in the state row; later ones refuse a different key before
    any command runs (`HostKeyMismatch`). `deadline_s` shortens the wait for SSH where a
    host that does not answer is not worth minutes (a `down`).
    """
    from orchestrate.core.ssh.session import DEFAULT_DEADLINE_S, Session

    state = runtime.state()
    row = state.get(name)
    assert row is not None and row.address, "the instance has an address by now"

    def on_wait(attempt: int, delay: float, reason: str) -> None:
        if attempt == 1:
            progress(f"waiting for SSH on {row.address} ({reason})")

    session = Session.connect(
        row.address,
        row.ssh_port,
        row.ssh_user or "orchestrate",
        key.private_path,
        pinned_host_key=row.host_key,
        deadline_s=DEFAULT_DEADLINE_S if deadline_s is None else deadline_s,
        on_wait=on_wait,
        name=name,
    )
    if row.host_key is None:
        from orchestrate.core.ssh.session import fingerprint

        state.update(name, host_key=session.host_key)
        state.event(name, "host-key", f"pinned host key {fingerprint(session.host_key)}")
    return session


def connect_shared(
    runtime: Runtime,
    name: str,
    key: SshKey,
    progress: Progress,
    *,
    deadline_s: float | None = None,
) -> Any:
    """The connection of the instance's live background tunnel, else a new one (`connect`).

    The tunnel's connection was made with the pinned host key, and it is used only when the
    tunnel says it serves the row's address, port, user and pinned key; a dead tunnel costs
    one refused local connect, or none when its pid is gone.
    """
    shared = shared_session(runtime, name, key)
    if shared is not None:
        return shared
    return connect(runtime, name, key, progress, deadline_s=deadline_s)


def shared_session(runtime: Runtime, name: str, key: SshKey) -> Any | None:
    """The live background tunnel's connection to `name`'s host (`core/ssh/control`), or
    None: no tunnel runs (no connect at all), or its socket is stale or serves another host
    or host key (one local connect)."""
    from orchestrate.core.flows.background import control_path, is_our_tunnel
    from orchestrate.core.ssh.control import open_shared

    row = runtime.state().get(name)
    if row is None or not row.host_key or not is_our_tunnel(row.tunnel_pid, name):
        return None
    expected = {
        "address": row.address,
        "port": row.ssh_port,
        "user": row.ssh_user or "orchestrate",
        "host_key": row.host_key,
    }
    return open_shared(control_path(name), expected, key.private_path, name)
