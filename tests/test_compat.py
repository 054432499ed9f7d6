"""The private library internals orchestrate reaches for (core/api/compat.py).

Two kinds of test per internal: one that fails when the installed library no longer has
it (so an upgrade that renames it is noticed here, not as a slower orchestrate), and one
that takes the fallback and checks the result is still right.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from orchestrate.core.api import compat


@pytest.fixture
def transport() -> Iterator[Any]:
    """A paramiko Transport over a socket pair: never started, nothing is sent."""
    import paramiko

    left, right = socket.socketpair()
    made = paramiko.Transport(left)
    try:
        yield made
    finally:
        made.close()
        right.close()


def test_paramiko_keeps_its_packetizer_socket_where_we_look(transport: Any) -> None:
    raw = compat.packetizer_socket(transport)
    assert isinstance(raw, socket.socket), "paramiko renamed Packetizer.__socket"
    marker = object()
    assert compat.replace_packetizer_socket(transport, marker)
    assert compat.packetizer_socket(transport) is marker


def test_without_a_packetizer_socket_nothing_is_replaced() -> None:
    class Bare:
        packetizer = object()  # a packet reader of another shape

    assert compat.packetizer_socket(Bare()) is None
    assert not compat.replace_packetizer_socket(Bare(), object())


def test_paramiko_keeps_its_message_sender() -> None:
    import paramiko

    assert callable(getattr(paramiko.Transport, compat.SEND_USER_MESSAGE, None)), (
        "paramiko dropped Transport._send_user_message: commands would wait a round trip more"
    )


def test_without_the_sender_the_caller_is_told_to_take_the_public_call() -> None:
    import paramiko

    class Channel:
        transport = object()  # no private sender

    assert not compat.send_without_reply(Channel(), paramiko.Message())  # type: ignore[arg-type]


def test_pluggy_keeps_its_hook_call_path() -> None:
    """Built-ins load on a hook's first call only through this path (tests/test_startup.py)."""
    import pluggy

    pm = pluggy.PluginManager("compat-test")
    seen: list[str] = []
    assert compat.before_each_hook_call(pm, lambda name: seen.append(name))

    class Spec:
        @pluggy.HookspecMarker("compat-test")
        def compat_hook(self) -> None: ...

    pm.add_hookspecs(Spec)
    pm.hook.compat_hook()
    assert seen == ["compat_hook"]


def test_without_pluggys_hook_call_path_every_builtin_loads_up_front(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrate.core.wiring import registry

    monkeypatch.setattr(compat, "PLUGGY_HOOKEXEC", "_no_such_method")
    pm = registry.build_manager(builtins=("orchestrate.plugins.providers.gcp",))
    assert not pm.lazy
    assert pm.has_plugin("providers.gcp")
    assert list(registry.providers(pm)) == ["gcp"]


def test_typer_keeps_its_converter_slot_from_the_version_that_has_it() -> None:
    """typer 0.29 has ``typer._coercion.RuntimeParam``; 0.22 to 0.27 do not (checked), and
    there the CLI lets typer convert every value, as the fallback test shows."""
    import typer

    version = tuple(int(p) for p in typer.__version__.split(".")[:2])
    found = compat.typer_runtime_param()
    if version >= (0, 29):
        assert found is not None, f"typer {typer.__version__} moved RuntimeParam"


@pytest.mark.parametrize("slot", ["typer._coercion", "typer._no_such_module"])
def test_with_or_without_typers_converter_slot_a_bad_value_reads_the_same(
    slot: str,
    orch_home: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrate.core.app import cli

    monkeypatch.setattr(compat, "TYPER_COERCION", slot)
    if slot.endswith("no_such_module"):
        assert compat.typer_runtime_param() is None
    assert cli.main(["logs", "nb", "--tail", "x"]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--tail'" in err and "integer" in err  # wording is typer's


def test_the_click_typer_runs_on_is_the_one_the_cli_catches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whichever click typer uses (its private copy, or the standalone one where it has
    none), its exceptions are what the CLI catches."""
    import importlib.util

    click = compat.typer_click()
    vendored = importlib.util.find_spec(compat.TYPER_CLICK) is not None
    assert click.__name__ == (compat.TYPER_CLICK if vendored else "click")
    assert issubclass(click.ClickException, Exception)
    monkeypatch.setattr(compat, "TYPER_CLICK", "typer._no_such_click")
    assert compat.typer_click().__name__ == "click"
