"""Plugin loading: built-ins from the list, third parties from entry points, the kill switch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.toy_plugin import MISSPELT_SOURCE, install_toy


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = install_toy(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.modules.pop("orch_toy", None)


def test_third_party_plugin_is_listed_with_distribution_and_hooks(toy, cli) -> None:
    result = cli("plugins")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    toy_line = next(i for i, line in enumerate(lines) if line.startswith("toy "))
    assert "orchestrate-toy 1.2.3" in lines[toy_line]
    assert "orchestrate_register_commands" in lines[toy_line + 1]
    assert "orchestrate_register_providers" in lines[toy_line + 1]


def test_hook_register_providers_from_a_third_party(toy, cli) -> None:
    providers = cli("providers")
    assert providers.code == 0
    assert "toy cloud used by orchestrate's own tests" in providers.out


def test_hook_register_commands_from_a_third_party(toy, cli) -> None:
    hello = cli("toy-hello")
    assert hello.code == 0
    assert hello.out.strip() == "hello from toy"


def test_disable_env_blocks_a_plugin(toy, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_DISABLE_PLUGINS", "toy, other")
    result = cli("plugins")
    assert result.code == 0
    assert not any(line.startswith("toy ") for line in result.out.splitlines())
    assert "disabled by ORCHESTRATE_DISABLE_PLUGINS: other, toy" in result.out
    assert "toy" not in cli("providers").out


def test_misspelt_hook_fails_loudly(tmp_path: Path, monkeypatch, cli) -> None:
    root = install_toy(tmp_path / "bad", source=MISSPELT_SOURCE, module="orch_bad")
    monkeypatch.syspath_prepend(str(root))
    try:
        result = cli("providers")
    finally:
        sys.modules.pop("orch_bad", None)
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "orchestrate_register_provider" in result.err
    assert "unknown hook" in result.err


def test_builtin_plugins_are_registered_by_name(cli) -> None:
    from orchestrate.core.wiring.registry import BUILTIN_PLUGINS, build_manager, builtin_name

    pm = build_manager()
    for module in BUILTIN_PLUGINS:
        assert pm.has_plugin(builtin_name(module)), module


def test_every_builtin_registers_every_hook_it_defines() -> None:
    """Under whatever pluggy is installed: pluggy 1.7 looks hook implementations up with
    `inspect.getattr_static`, so a hook a module provides only through a module-level
    `__getattr__` silently registers nothing (autostop once did, and no host got it)."""
    import importlib

    from orchestrate.core.wiring.registry import BUILTIN_PLUGINS, build_manager, builtin_name

    pm = build_manager()
    pm.load_builtins()
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        defined = {
            name
            for name in dir(module)
            if name.startswith("orchestrate_")
            and getattr(getattr(module, name), "orchestrate_impl", None) is not None
        }
        assert defined, f"{module_name} defines no hook implementation"
        plugin = pm.get_plugin(builtin_name(module_name))
        registered = {caller.name for caller in pm.get_hookcallers(plugin) or []}
        assert registered == defined, (module_name, sorted(defined - registered))


def test_docker_and_notebook_cannot_be_disabled(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATE_DISABLE_PLUGINS", "host.autostop,host.notebook")
    result = cli("providers")
    assert result.code != 0
    assert "host.notebook, which cannot be disabled" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) <= 2
