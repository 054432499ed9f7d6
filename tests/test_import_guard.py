"""`orchestrate --help` stays fast: the CLI must not import libcloud or paramiko up front.

Run in a fresh interpreter, because this test process has long since imported both.
"""

from __future__ import annotations

from tests.support.modules import modules_after, top_level

HEAVY = ("libcloud", "paramiko", "cryptography", "rich")


def _modules_after(*args: str) -> tuple[int, set[str]]:
    code, modules = modules_after(*args)
    return code, top_level(modules)


def test_help_loads_no_heavy_module() -> None:
    code, modules = _modules_after("--help")
    assert code == 0
    loaded = [name for name in HEAVY if name in modules]
    assert not loaded, f"--help imported {loaded}"


def test_every_command_help_loads_no_heavy_module() -> None:
    from orchestrate.core.app.cli import make_app
    from orchestrate.core.wiring.runtime import Runtime  # noqa: F401 - the app needs it at run time

    app = make_app()
    names = [c.name or c.callback.__name__ for c in app.registered_commands]  # type: ignore[union-attr]
    assert "plugins" in names
    for name in names:
        code, modules = _modules_after(name, "--help")
        assert code == 0, name
        loaded = [m for m in HEAVY if m in modules]
        assert not loaded, f"`{name} --help` imported {loaded}"
