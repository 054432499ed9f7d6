"""Start-up stays cheap: built-in plugins load on first need, never for `--help`.

The figure itself is a benchmark (bench/, B1), never a timed test; these tests pin the
behaviour that makes it cheap, and that laziness changes nothing a user or plugin sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.modules import modules_after


@pytest.mark.parametrize("args", [("--help",), ("status", "--offline")])
def test_no_builtin_plugin_is_imported_for(args: tuple[str, ...], orch_home: object) -> None:
    code, modules = modules_after(*args)
    assert code == 0
    loaded = [m for m in modules if m.startswith("orchestrate.plugins.")]
    assert not loaded, f"`orchestrate {' '.join(args)}` imported {loaded}"


def test_a_hook_call_loads_the_builtins_first() -> None:
    from orchestrate.core.wiring.registry import build_manager, providers

    pm = build_manager(builtins=("orchestrate.plugins.providers.gcp",))
    assert pm.builtin_names == {"providers.gcp"}
    # The first hook call sees the built-ins' implementations, not the empty list it was
    # handed before they loaded.
    assert list(providers(pm)) == ["gcp"]


def test_listing_plugins_loads_the_builtins() -> None:
    from orchestrate.core.wiring.registry import build_manager

    pm = build_manager(builtins=("orchestrate.plugins.providers.gcp",))
    assert [name for name, _ in pm.list_name_plugin()] == ["providers.gcp"]


def test_a_disabled_builtin_stays_unloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrate.core.wiring.registry import build_manager, providers

    monkeypatch.setenv("ORCHESTRATE_DISABLE_PLUGINS", "providers.gcp")
    pm = build_manager(builtins=("orchestrate.plugins.providers.gcp",))
    assert providers(pm) == {}
    assert not pm.has_plugin("providers.gcp")


@pytest.fixture
def fake_builtin() -> Iterator[str]:
    """A module posing as a built-in plugin that (wrongly) adds a command."""
    from orchestrate.core.api.hooks import hookimpl

    module = types.ModuleType("orchestrate_fake_builtin")

    @hookimpl
    def orchestrate_register_commands(app: object) -> None:
        """A command a lazily loaded built-in could never add in time."""

    module.orchestrate_register_commands = orchestrate_register_commands  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module.__name__
    sys.modules.pop(module.__name__, None)


def test_a_builtin_may_not_add_commands(fake_builtin: str) -> None:
    from orchestrate.core.api.errors import PluginError
    from orchestrate.core.wiring.registry import build_manager

    pm = build_manager(builtins=(fake_builtin,))
    with pytest.raises(PluginError, match="orchestrate_register_commands"):
        pm.load_builtins()


def test_entry_points_are_read_from_the_cache_on_later_starts(orch_home: object) -> None:
    """The second start finds its entry points without importing importlib.metadata."""
    first = modules_after("--help")[1]
    second = modules_after("--help")[1]
    assert "importlib.metadata" in first
    assert "importlib.metadata" not in second


def test_two_ways_of_starting_do_not_evict_each_other(orch_home: Path) -> None:
    """`python -m` puts the current folder first on sys.path, the console script its bin
    folder: two keys, both kept."""
    modules_after("--help")
    by_module = subprocess.run(
        [sys.executable, "-m", "orchestrate.core.app.cli", "--help"], capture_output=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert by_module.returncode == 0
    assert "importlib.metadata" not in modules_after("--help")[1]


def test_a_plugin_installed_after_the_cache_was_written_is_found(
    orch_home: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrate.core.wiring.registry import _entry_points, build_manager

    from tests.support.toy_plugin import install_toy

    assert all(name != "toy" for name, *_ in _entry_points())  # cache written, no toy
    root = install_toy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    try:
        pm = build_manager(builtins=())
        assert pm.has_plugin("toy")
    finally:
        sys.modules.pop("orch_toy", None)


@pytest.mark.parametrize(
    "args", [("status", "--offline"), ("status", "--offline", "nb"), ("--debug", "plugins")]
)
def test_plain_values_need_no_pydantic(args: tuple[str, ...], orch_home: Path) -> None:
    """Typer converts values through pydantic (300-400 ms to import and build); the CLI's
    own plain str/int/Path/bool parameters are converted without it (core/app/cli.py)."""
    _, modules = modules_after(*args)
    assert "pydantic" not in modules


def test_plain_values_are_converted_and_checked(cli: object) -> None:
    run = cli  # the in-process CLI fixture of tests/conftest.py
    bad = run("launch", "nb", "--port", "eighty")  # type: ignore[operator]
    assert bad.code == 2
    assert bad.err.strip() == (
        "orchestrate: Invalid value for '--port': 'eighty' is not a valid integer."
    )
    assert run("status", "--offline", "--json").out.strip() == "[]"  # type: ignore[operator]


def test_a_typed_plugin_parameter_is_still_converted() -> None:
    """A parameter with a constraint keeps Typer's own conversion, bounds included."""
    import typer
    from orchestrate.core.app.cli import _plain_values

    app = typer.Typer()
    seen: list[object] = []

    @app.command()
    def go(
        count: int = typer.Option(1, min=1, max=3),
        where: Path = typer.Option(Path("."), "--where"),
    ) -> None:
        seen.append((count, where))

    command = typer.main.get_command(app)
    _plain_values(command)
    command.main(["--count", "2", "--where", "/tmp"], standalone_mode=False)
    assert seen == [(2, Path("/tmp"))]
    with pytest.raises(Exception, match="3"):
        command.main(["--count", "9"], standalone_mode=False)


def test_the_source_scan_finds_every_hook_a_builtin_implements() -> None:
    """`_hooks_named_in` decides which built-ins a hook call loads; it may name more hooks
    than a module implements, never fewer."""
    import importlib

    from orchestrate.core.wiring.registry import BUILTIN_PLUGINS, _hooks_named_in, build_manager

    pm = build_manager(builtins=())
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        implemented = {
            attr
            for attr in dir(module)
            if pm.parse_hookimpl_opts(module, attr) is not None
        }
        named = _hooks_named_in(module_name)
        assert named is None or implemented <= named, (module_name, implemented - named)


def test_asking_for_providers_loads_no_host_step(orch_home: Path) -> None:
    code = (
        "import sys, json\n"
        "from orchestrate.core.wiring.registry import build_manager, providers\n"
        "found = providers(build_manager())\n"
        "print(json.dumps([sorted(found), sorted(m for m in sys.modules"
        " if m.startswith('orchestrate.plugins.host.'))]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    found, host_modules = json.loads(out)
    assert "gcp" in found
    assert host_modules == []
