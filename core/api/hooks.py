"""The hook specifications: every way a plugin can extend orchestrate.

Built-in plugins and third-party ones (entry-point group ``orchestrate``) implement these
with ``@hookimpl``. Each spec's docstring says when it is called and what it returns;
``tests/test_hooks_documented.py`` fails for a spec without a docstring or without a test
that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - types only, keeps start-up light
    import typer
    from orchestrate.core.api.hoststeps import HostStep, StepContext, StepResult
    from orchestrate.core.api.provider import Provider

PROJECT = "orchestrate"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    """Called once when the plugin manager is built, before any command runs.

    Call ``register(provider)`` for each `orchestrate.core.api.provider.Provider` instance the
    plugin offers. Returns nothing. Two providers with the same name are an error.
    """


@hookspec
def orchestrate_register_commands(app: typer.Typer) -> None:
    """Called in ``main()`` after the built-in commands exist, never at import time.

    Add Typer commands to ``app``. Returns nothing. Import heavy modules inside the
    command functions so ``orchestrate --help`` stays fast.
    """


@hookspec
def orchestrate_host_steps(context: StepContext) -> Sequence[HostStep]:
    """Called when `launch` or `start` plans the host setup for one instance.

    Return the `HostStep` objects this plugin contributes (driver, docker, toolkit, verify,
    notebook, autostop ...). Core orders all steps by their declared dependencies, asks each
    ``needed(facts)`` and runs only those. Return an empty list to contribute nothing.
    """
    return []


@hookspec(firstresult=True)
def orchestrate_open_tunnel(
    session: Any, local_port: int, remote_host: str, remote_port: int, port_explicit: bool
) -> Any:
    """Called when a command needs the local port forward to the notebook.

    ``session`` is the open `orchestrate.core.ssh.session.Session`. ``port_explicit`` is True
    when the user named ``local_port`` (``--port``): a busy port is then an error to report,
    where otherwise the next free port will do. The first plugin returning a non-None object
    wins; it must have ``close()``, ``local_port`` and ``stats()``. Core's own paramiko
    forwarder answers when no plugin does. An implementation may leave ``port_explicit``
    out of its parameters (pluggy passes only those it names).
    """


@hookspec
def orchestrate_status_notes(row: Any, session: Any) -> Sequence[str]:
    """Called by `status` for each instance row it shows; returns lines to add to the row.

    ``row`` is the `orchestrate.core.store.state.InstanceRow` (name, provider, status,
    ``extra``; ``row.launched_profile()`` is the profile it was launched with, typed and with
    defaults filled, e.g. ``.autostop``). ``session`` is an open `Session` to the host when
    `status NAME` reads a running host, else None: answer from the row alone then (a
    listing of many rows must stay quick and never touch a host). Run at most one short
    command on the session, and never raise for a host that does not answer: return a
    line saying so. Core drops a line that another plugin already returned.
    """
    return []


@hookspec
def orchestrate_before_step(step: HostStep, context: StepContext) -> None:
    """Called just before a needed host step's script is sent to the host. Returns nothing."""


@hookspec
def orchestrate_after_step(step: HostStep, context: StepContext, result: StepResult) -> None:
    """Called after a host step finished, with its `StepResult` (ok, seconds, output tail).

    Returns nothing. (Core writes its event log itself; this hook is for plugins.)
    """


@hookspec
def orchestrate_before_node_removed(row: Any, session: Any) -> None:
    """Called by `scale` before it deletes a cluster worker, so the node leaves its cluster
    cleanly (Ray's node stopped, its tasks rescheduled) instead of vanishing under it.

    ``row`` is the worker's `orchestrate.core.store.state.InstanceRow` (``row.cluster``,
    ``row.node_index``); ``session`` is an open `Session` to that worker, or None when it
    cannot be reached (stopped, gone): do nothing then. Returns nothing; an exception is
    reported as a warning and the node is deleted anyway.
    """
