"""Building the plugin manager: built-ins from a list, third parties from entry points.

Built-in plugins are ordinary plugins: the same hooks, the same manager, and the same way to
switch them off (`ORCHESTRATE_DISABLE_PLUGINS=name,name`). Only their discovery differs: a
list here instead of entry-point metadata, which keeps start-up fast.

Start-up cost is also why the built-ins load lazily: they (providers with their option
tables, host steps with their scripts) take longer to import than the rest of the CLI
together, and `orchestrate --help` or `status --offline` calls none of their hooks. The
manager imports them on the first call of any hook but `orchestrate_register_commands`
(built-in commands live in core/commands, so a built-in plugin may not implement it, which
loading checks), and before any question about which plugins exist. Third-party plugins load
at once: they may add commands; their entry points come from a small cache rather than a scan
of every installed distribution at each start (`_entry_points`).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from orchestrate.core.api import compat, hooks
from orchestrate.core.api.errors import PluginError, UsageError

if TYPE_CHECKING:
    from orchestrate.core.api.provider import Provider

ENTRY_POINT_GROUP = "orchestrate"
DISABLE_ENV = "ORCHESTRATE_DISABLE_PLUGINS"
#: Set to 1 to read entry points from the installed metadata at every start (no cache).
NO_CACHE_ENV = "ORCHESTRATE_NO_PLUGIN_CACHE"

#: Built-in plugin modules; their plugin name is the part after "orchestrate.plugins.".
BUILTIN_PLUGINS: tuple[str, ...] = (
    "orchestrate.plugins.providers.gcp",
    "orchestrate.plugins.providers.aws",
    "orchestrate.plugins.providers.ssh",
    "orchestrate.plugins.host.gpu_check",
    "orchestrate.plugins.host.nvidia_driver",
    "orchestrate.plugins.host.docker",
    "orchestrate.plugins.host.container_toolkit",
    "orchestrate.plugins.host.verify",
    "orchestrate.plugins.host.image",
    "orchestrate.plugins.host.notebook",
    "orchestrate.plugins.host.autostop",
    "orchestrate.plugins.host.ray",
)

#: The built-ins that contribute host steps.
HOST_PLUGINS: tuple[str, ...] = tuple(
    m for m in BUILTIN_PLUGINS if m.startswith("orchestrate.plugins.host.")
)

#: Plugins a launch cannot do without: with docker or the notebook container switched off,
#: `launch` would succeed without a notebook. Asking to disable one is an error.
REQUIRED_PLUGINS: frozenset[str] = frozenset({"host.docker", "host.notebook"})


def builtin_name(module: str) -> str:
    return module.removeprefix("orchestrate.plugins.")


def disabled_plugins() -> set[str]:
    """The plugins `ORCHESTRATE_DISABLE_PLUGINS` names; a required one is a usage error."""
    raw = os.environ.get(DISABLE_ENV, "")
    names = {part.strip() for part in raw.split(",") if part.strip()}
    required = sorted(names & REQUIRED_PLUGINS)
    if required:
        raise UsageError(
            f"{DISABLE_ENV} names {', '.join(required)}, which cannot be disabled",
            hint="docker and the notebook container are what `launch` is for; "
            f"remove {' and '.join(required)} from {DISABLE_ENV}",
        )
    return names


#: The one hook fired before any built-in is needed; built-ins may not implement it.
COMMANDS_HOOK = "orchestrate_register_commands"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, with each built-in plugin imported when one of its hooks is first
    called.

    A hook call (pluggy routes each through `_hookexec`, see `compat.before_each_hook_call`)
    first loads the built-ins that implement that hook:
    `status` asks for providers and so imports the three provider plugins, not the host
    steps. Which hooks a built-in implements is read from its source without importing it
    (`_hooks_named_in`; a test holds that to what pluggy registers). Listing plugins loads
    them all. `orchestrate_register_commands` never loads any, so `--help` imports no
    provider and no host step. Being registered after the third-party plugins, built-ins'
    implementations run before theirs for the same hook (pluggy calls the latest first).
    """

    def __init__(self, project_name: str, builtins: Sequence[str] = ()) -> None:
        super().__init__(project_name)
        #: built-in module -> the hooks its source names (None: not read yet, or unknown).
        self._pending: dict[str, frozenset[str] | None] = dict.fromkeys(builtins)
        self._scanned = False
        self._loading = threading.RLock()
        #: plugin names of the built-ins, loaded or not.
        self.builtin_names = frozenset(builtin_name(m) for m in builtins)
        #: whether hook calls load built-ins lazily (pluggy's private call path, `compat`).
        self.lazy = compat.before_each_hook_call(self, self._before_hook)

    def load_builtins(self, hook: str | None = None) -> None:
        """Import and register the pending built-ins that implement `hook` (all of them when
        `hook` is None). Once each; thread-safe."""
        if not self._pending:
            return
        with self._loading:
            if hook is not None and not self._scanned:
                self._pending = {m: _hooks_named_in(m) for m in self._pending}
                self._scanned = True
            wanted = [
                m
                for m, named in self._pending.items()
                if hook is None or named is None or hook in named
            ]
            for module_name in wanted:
                del self._pending[module_name]
                name = builtin_name(module_name)
                if self.is_blocked(name):
                    continue
                module = importlib.import_module(module_name)
                if hasattr(module, COMMANDS_HOOK):
                    raise PluginError(
                        f"built-in plugin {name!r} implements {COMMANDS_HOOK}",
                        hint="built-in commands belong in orchestrate.core.app.commands: "
                        "built-in plugins load after the commands are registered",
                    )
                self.register(module, name=name)
            if wanted:
                check(self)

    def _before_hook(self, hook_name: str) -> list[pluggy.HookImpl] | None:
        """Load the built-ins a hook call needs; their implementations, read again after."""
        if self._pending and hook_name != COMMANDS_HOOK:
            self.load_builtins(hook_name)
            impls: list[pluggy.HookImpl] = getattr(self.hook, hook_name).get_hookimpls()
            return impls
        return None

    def get_plugins(self) -> set[Any]:
        self.load_builtins()
        return super().get_plugins()

    def get_plugin(self, name: str) -> Any | None:
        self.load_builtins()
        return super().get_plugin(name)

    def has_plugin(self, name: str) -> bool:
        self.load_builtins()
        return super().has_plugin(name)

    def list_name_plugin(self) -> list[tuple[str, Any]]:
        self.load_builtins()
        return super().list_name_plugin()


_HOOK_NAME = re.compile(r"\borchestrate_[a-z0-9_]+")


def _hooks_named_in(module_name: str) -> frozenset[str] | None:
    """The hook names a built-in module's source mentions, read without importing it.

    A module can only implement a hook it names (a function `orchestrate_X`, a re-export,
    or `specname="orchestrate_X"`), so this is a superset of what it implements: a module
    is at worst loaded for a hook it does not implement, never missed. None (load it for
    every hook) where the source cannot be read or re-exports with ``import *``.
    """
    try:
        spec = importlib.util.find_spec(module_name)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(".py"):
            return None
        with open(origin, encoding="utf-8") as handle:
            source = handle.read()
    except (ImportError, OSError, ValueError):
        return None
    if "import *" in source:
        return None
    return frozenset(_HOOK_NAME.findall(source))


def check(pm: pluggy.PluginManager) -> None:
    """`check_pending()`: a misspelt hook implementation fails loudly instead of silently
    never being called."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"plugin {pm.get_name(exc.plugin) or exc.plugin!r}: {exc}",
            hint="hook names start with orchestrate_ and must match core/api/hooks.py",
        ) from exc


def build_manager(builtins: tuple[str, ...] | None = None) -> PluginManager:
    """A plugin manager with every enabled plugin known and checked.

    Third-party plugins are loaded and checked here; the built-ins when first needed (see
    `PluginManager`), where a misspelt hook of theirs fails just as loudly.
    """
    pm = PluginManager(hooks.PROJECT, BUILTIN_PLUGINS if builtins is None else builtins)
    pm.add_hookspecs(hooks)
    blocked = disabled_plugins()
    for name in blocked:
        pm.set_blocked(name)
    _load_entry_points(pm, blocked)
    if not pm.lazy:  # pluggy offers no way to load them on first use: load them now
        pm.load_builtins()
    check(pm)
    return pm


#: distribution (name, version) of each plugin loaded from an entry point, by plugin name.
_DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _load_entry_points(pm: PluginManager, blocked: set[str]) -> None:
    """Register third-party plugins from the `orchestrate` entry-point group.

    Not pluggy's load_setuptools_entrypoints: it parses every installed distribution's
    METADATA (tens of ms at each start); the group lookup reads entry_points.txt only, and
    `_entry_points` caches even that.
    """
    for name, value, dist_name, dist_version in _entry_points():
        # A built-in of the same name wins, as when built-ins loaded first. (Not has_plugin:
        # asking which plugins exist would load the built-ins.)
        if name in blocked or name in pm.builtin_names:
            continue
        try:
            plugin = _load_object(value)
        except Exception as exc:  # a broken plugin must say which one it is
            raise PluginError(
                f"plugin {name!r} ({value}) failed to load: {type(exc).__name__}: {exc}",
                hint=f"fix or uninstall it, or set {DISABLE_ENV}={name}",
            ) from exc
        pm.register(plugin, name=name)
        if dist_name:
            _DISTRIBUTIONS[name] = (dist_name, dist_version)


def _load_object(value: str) -> Any:
    """The object an entry point's ``module:attr.attr [extra]`` names (EntryPoint.load)."""
    module_name, _, attrs = value.split("[", 1)[0].strip().partition(":")
    obj: Any = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


#: (name, value, distribution name, distribution version) of one entry point.
EntryPointRow = tuple[str, str, str, str]


def _path_key() -> list[list[Any]]:
    """What the group's entry points hang on: the distributions on each sys.path entry.

    For each entry, the ``*.dist-info``/``*.egg-info`` names in it (they carry the version)
    and the mtime of each one's entry_points.txt: installing, upgrading, removing or
    reinstalling a distribution changes one of them, and nothing else matters. Not the
    folders' own mtimes: the current directory is on sys.path and changes all the time.
    About 1 ms for a few hundred distributions.
    """
    key: list[list[Any]] = []
    for entry in sys.path:
        folder = entry or "."
        try:
            names = os.listdir(folder)
        except OSError:  # missing, or a zip file: its own mtime is the key
            try:
                key.append([entry, os.stat(folder).st_mtime_ns])
            except OSError:
                key.append([entry, None])
            continue
        dists: list[list[Any]] = []
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    stamp = os.stat(os.path.join(folder, name, "entry_points.txt")).st_mtime_ns
                except OSError:
                    stamp = None
                dists.append([name, stamp])
        key.append([entry, sorted(dists)])
    return key


def _cache_file() -> Path:
    from orchestrate.core.store.paths import state_dir

    return state_dir() / "entry-points.json"


#: How many sys.path layouts the cache remembers: the console script (its bin folder first)
#: and `python -m` (the current folder first) see different ones, which must not evict each
#: other at every start.
CACHE_ENTRIES = 8


def _entry_points() -> list[EntryPointRow]:
    """Every entry point of our group, from the cache when the distributions are unchanged.

    Why a cache: `importlib.metadata` costs ~15 ms to import and a few more to scan every
    installed distribution, at each start, for a group that is usually empty. Entries are
    keyed on `_path_key()`, the most recent first; any trouble reading or writing the file
    falls back to the scan.
    """
    use_cache = os.environ.get(NO_CACHE_ENV, "") in ("", "0")
    key = _path_key()
    path = _cache_file()
    entries: list[dict[str, Any]] = []
    if use_cache:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached["group"] == ENTRY_POINT_GROUP:
                entries = [e for e in cached["entries"] if isinstance(e, dict)]
            for entry in entries:
                if entry["key"] == key:
                    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in entry["rows"]]
        except (OSError, ValueError, TypeError, KeyError):
            entries = []
    from importlib.metadata import entry_points

    rows: list[EntryPointRow] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        rows.append((ep.name, ep.value, dist.name if dist else "", dist.version if dist else ""))
    if use_cache:
        entries = [{"key": key, "rows": rows}, *entries][:CACHE_ENTRIES]
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            payload = {"group": ENTRY_POINT_GROUP, "entries": entries}
            tmp.write_text(json.dumps(payload), encoding="utf-8")
            tmp.replace(path)
        except OSError:  # a read-only state folder still runs, uncached
            pass
    return rows


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
