"""Every use of a library's private internals, each with its fallback, in one place.

A library may rename or drop a private name in any release. Kept together, an upgrade is
checked in one file, and ``tests/test_compat.py`` fails when a name below no longer exists
in the installed version (rather than the fallback quietly making orchestrate slower).
Each function here says what it reaches for, why, and what happens without it: always a
slower or plainer path, never a different result.

It lives in ``api``, the lowest layer, so that every layer that needs one may import it;
plugins do not use it (they keep to the public API). Libraries are imported inside the
functions: ``orchestrate --help`` must not load paramiko.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - types only
    import paramiko

#: paramiko's Packetizer keeps its socket in a name-mangled private attribute.
PACKETIZER_SOCKET = "_Packetizer__socket"
#: paramiko's Transport method that queues one message without waiting for a reply.
SEND_USER_MESSAGE = "_send_user_message"
#: pluggy's PluginManager method every hook call goes through.
PLUGGY_HOOKEXEC = "_hookexec"
#: typer's module with the per-parameter converter class (`RuntimeParam`).
TYPER_COERCION = "typer._coercion"
#: typer's vendored click (recent typer releases carry their own copy of click).
TYPER_CLICK = "typer._click"
#: typer's vendored click exceptions, where its ``BadParameter`` lives next to ``RuntimeParam``.
TYPER_EXCEPTIONS = "typer._click.exceptions"


def packetizer_socket(transport: paramiko.Transport) -> Any | None:
    """The socket paramiko's packet reader reads from, or None where the shape differs."""
    packetizer = getattr(transport, "packetizer", None)
    return getattr(packetizer, PACKETIZER_SOCKET, None) if packetizer is not None else None


def replace_packetizer_socket(transport: paramiko.Transport, sock: object) -> bool:
    """Make paramiko's packet reader read from ``sock``; False (nothing done) without the
    private attribute. Used to read ahead under paramiko (`tunnel_link.ReadAheadSocket`);
    without it the tunnel's first seconds on a slow link are slower."""
    packetizer = getattr(transport, "packetizer", None)
    if packetizer is None or not hasattr(packetizer, PACKETIZER_SOCKET):
        return False
    setattr(packetizer, PACKETIZER_SOCKET, sock)
    return True


def send_without_reply(chan: paramiko.Channel, message: paramiko.Message) -> bool:
    """Queue ``message`` on the channel's transport without waiting for an answer; False
    (nothing sent) without paramiko's private sender, and the caller takes the public,
    waiting call (`channelio.exec_pipelined`: one round trip more per command)."""
    send = getattr(chan.transport, SEND_USER_MESSAGE, None)
    if send is None:
        return False
    send(message)
    return True


def typer_click() -> Any:
    """The click typer runs on: its vendored private copy where it has one, else the
    standalone click that older typer releases depend on. Importing the standalone click
    next to a vendored one would cost start-up time for nothing, and its exceptions would
    not be the ones typer raises."""
    import importlib

    try:
        return importlib.import_module(TYPER_CLICK)
    except ImportError:
        return importlib.import_module("click")


def typer_runtime_param() -> tuple[type[Any], type[Any]] | None:
    """typer's ``RuntimeParam`` (the per-parameter converter typer fills in lazily) and its
    ``BadParameter``, or None where this typer has no such slot: the CLI then lets typer
    convert every value itself (slower start-up, same result). See
    `orchestrate.core.app.cli._plain_values`."""
    import importlib

    try:
        coercion = importlib.import_module(TYPER_COERCION)
        exceptions = importlib.import_module(TYPER_EXCEPTIONS)
    except ImportError:
        return None
    runtime = getattr(coercion, "RuntimeParam", None)
    bad = getattr(exceptions, "BadParameter", None)
    if not isinstance(runtime, type) or not isinstance(bad, type):
        return None
    return runtime, bad


def before_each_hook_call(pm: Any, before: Callable[[str], Sequence[Any] | None]) -> bool:
    """Run ``before(hook name)`` ahead of every hook call of pluggy manager ``pm``; when it
    returns implementations, the call runs those instead (they were just registered).

    pluggy routes every hook call through the private ``PluginManager._hookexec``, which hook
    callers look up when they are made: call this before ``add_hookspecs``. Returns False
    (nothing done) where pluggy has no such method; the registry then loads every built-in
    up front (slower start-up, same hooks). See `orchestrate.core.wiring.registry`.
    """
    original = getattr(pm, PLUGGY_HOOKEXEC, None)
    if not callable(original):
        return False

    def hookexec(name: str, methods: Sequence[Any], kwargs: Any, firstresult: bool) -> Any:
        fresh = before(name)
        return original(name, methods if fresh is None else fresh, kwargs, firstresult)

    setattr(pm, PLUGGY_HOOKEXEC, hookexec)
    return True
