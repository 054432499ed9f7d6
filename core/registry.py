"""Building the plugin manager: built-ins from a list, third parties from entry points.

Built-in plugins are ordinary plugins: the same hooks, the same manager, and the same way to
switch them off (`ORCHESTRATE_DISABLE_PLUGINS=name,name`). Only their discovery differs: a
list here instead of entry-point metadata, which keeps start-up fast.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy
from orchestrate.core import hooks
from orchestrate.core.errors import PluginError, UsageError

if TYPE_CHECKING:
    from orchestrate.core.provider import Provider

ENTRY_POINT_GROUP = "orchestrate"
DISABLE_ENV = "ORCHESTRATE_DISABLE_PLUGINS"

#: Built-in plugin modules; their plugin name is the part after "orchestrate.plugins.".
BUILTIN_PLUGINS: tuple[str, ...] = ()


def builtin_name(module: str) -> str:
    return module.removeprefix("orchestrate.plugins.")


def disabled_plugins() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def build_manager(builtins: tuple[str, ...] | None = None) -> pluggy.PluginManager:
    """A plugin manager with every enabled plugin loaded and checked.

    `check_pending()` makes a misspelt hook implementation fail here, loudly, instead of
    silently never being called.
    """
    pm = pluggy.PluginManager(hooks.PROJECT)
    pm.add_hookspecs(hooks)
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    for module_name in BUILTIN_PLUGINS if builtins is None else builtins:
        name = builtin_name(module_name)
        if name in blocked:
            continue
        module = importlib.import_module(module_name)
        pm.register(module, name=name)
    _load_entry_points(pm, blocked)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {pm.get_name(exc.plugin) or exc.plugin!r}: {exc}",
            hint="hook names start with orchestrate_ and must match core/hooks.py",
        ) from exc
    return pm


#: distribution (name, version) of each plugin loaded from an entry point, by plugin name.
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _load_entry_points(pm: pluggy.PluginManager, blocked: set[str]) -> None:
    """Register third-party plugins from the `orchestrate` entry-point group.

    Not pluggy's load_setuptools_entrypoints: it parses every installed distribution's
    METADATA (tens of ms at each start); the group lookup reads entry_points.txt only.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in blocked or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                hint=f"fix or uninstall it, or set {DISABLE_ENV}={ep.name}",
            ) from exc
        pm.register(plugin, name=ep.name)
        dist = ep.dist
        if dist is not None:
            _DISTRIBUTIONS[ep.name] = (dist.name, dist.version)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: tuple[str, ...]


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin with the distribution it came from and the hooks it implements."""
    from orchestrate.core import __version__

    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        callers = pm.get_hookcallers(plugin) or []
        distribution, version = _DISTRIBUTIONS.get(name, ("orchestrate (built-in)", __version__))
        infos.append(
            PluginInfo(name, distribution, version, tuple(sorted(c.name for c in callers)))
        )
    return sorted(infos, key=lambda info: info.name)


def providers(pm: pluggy.PluginManager) -> dict[str, Provider]:
    """Providers registered through `orchestrate_register_providers`, by name."""
    found: dict[str, Provider] = {}

    def register(provider: Provider) -> None:
        if not provider.name:
            raise PluginError(f"provider {type(provider).__name__} has no name")
        if provider.name in found:
            raise PluginError(f"two plugins register a provider named {provider.name!r}")
        found[provider.name] = provider

    pm.hook.orchestrate_register_providers(register=register)
    return found


def pick_provider(available: dict[str, Provider], name: str | None) -> Provider:
    """The provider called `name`, or a usage error listing the installed ones."""
    if not name:
        raise UsageError(
            "no provider given", hint=f"pass --provider ({', '.join(sorted(available))})"
        )
    if name not in available:
        raise UsageError(
            f"unknown provider {name!r}",
            hint=f"installed: {', '.join(sorted(available)) or 'none'};"
            " see `orchestrate providers`",
        )
    return available[name]
