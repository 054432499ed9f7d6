"""TOML launch profiles: files, `extends`, provider sub-tables, CLI overrides.

Files are read in order and later ones win: the user config file, then `./orchestrate.toml`,
then `--config FILE`. Every error names the file, the line when it can be found, the key,
and what was expected, because a profile is usually edited by hand far from the command that
reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrate.core.api import grammar
from orchestrate.core.api.durations import parse_duration
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.store.profilefile import (
    Origin,
    _RawProfile,
    default_files,
    read_file,
    untrusted_files,
)

#: Keys every profile may have, with their type and default. Provider sub-tables are separate.
COMMON_KEYS: dict[str, tuple[type, Any]] = {
    "provider": (str, None),
    "extends": (str, None),
    "description": (str, ""),
    # The notebook container image (Jupyter Docker Stacks' CUDA build of PyTorch by default).
    "image": (str, "quay.io/jupyter/pytorch-notebook:cuda12-latest"),
    "port": (int, 8899),
    "remote_port": (int, 8888),
    "notebooks_dir": (str, "~/notebooks"),
    "container_notebooks_dir": (str, "/notebooks"),
    "container_name": (str, "orchestrate-notebook"),
    "autostop": (str, "60m"),
    "bootstrap": (str, "ssh"),
    # launch asks before creating anything estimated above this many dollars per hour.
    "confirm_above": (float, 5.0),
    # How many instances: 1 is a lone notebook host; more make a Ray cluster (one head with
    # the notebook, the rest workers), all of the same spec in one zone.
    "nodes": (int, 1),
}
BOOTSTRAP_MODES = ("ssh", "startup-script")
DEFAULT_PROFILE = "default"


@dataclass
class Profile:
    """A resolved profile: common keys validated, the provider sub-table still raw.

    The provider plugin validates `provider_table` (see `Provider.validate_options`), since
    only it knows its keys.
    """

    name: str
    values: dict[str, Any]
    provider_tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    chain: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def provider(self) -> str | None:
        value = self.values.get("provider")
        return str(value) if value is not None else None

    def provider_table(self) -> dict[str, Any]:
        return dict(self.provider_tables.get(self.provider or "", {}))

    def table_where(self) -> str:
        """How to name the provider sub-table in an error: file, line and table; a `Where`
        that also knows each key's line (`optionchecks.at`)."""
        from orchestrate.core.api.optionchecks import Where

        origin = self.origins.get(self.provider or "")
        table = f"profiles.{self.name}.{self.provider}"
        prefix = f"{self.provider}."
        keys = {
            key[len(prefix) :]: f"{place}: [{table}]"
            for key, place in self.origins.items()
            if key.startswith(prefix)
        }
        return Where(f"{origin}: [{table}]" if origin else f"[{table}]", keys)

    def where(self, key: str) -> str:
        origin = self.origins.get(key)
        return f"{origin}: " if origin else ""

    @classmethod
    def from_snapshot(cls, data: Mapping[str, Any]) -> Profile:
        """The profile a state row was launched with, read back from `profile_snapshot`.

        Keys the snapshot lacks (a row written before a key existed, or a hand-made row)
        take today's defaults from `COMMON_KEYS`, so readers never restate a default.
        """
        values = {key: default for key, (_, default) in COMMON_KEYS.items()}
        stored = data.get("values")
        if isinstance(stored, Mapping):
            values.update(stored)
        tables = data.get("provider_tables")
        return cls(
            name=str(data.get("name", "(snapshot)")),
            values=values,
            provider_tables={
                str(k): dict(v)
                for k, v in (tables.items() if isinstance(tables, Mapping) else ())
                if isinstance(v, Mapping)
            },
        )

    # Typed views of the common keys: the one place their types are restated.

    @property
    def port(self) -> int:
        """The local port the notebook URL uses."""
        return int(self.values["port"])

    @property
    def remote_port(self) -> int:
        """The port Jupyter is published on, on the host's loopback."""
        return int(self.values["remote_port"])

    @property
    def container_name(self) -> str:
        return str(self.values["container_name"])

    @property
    def image(self) -> str:
        return str(self.values["image"])

    @property
    def autostop(self) -> str:
        """The idle window as written (``60m``, ``off``); parse it with `parse_duration`."""
        return str(self.values["autostop"])

    @property
    def notebooks_dir(self) -> str:
        return str(self.values["notebooks_dir"])

    @property
    def container_notebooks_dir(self) -> str:
        return str(self.values["container_notebooks_dir"])

    @property
    def bootstrap(self) -> str:
        """How the host is set up: one of `BOOTSTRAP_MODES`."""
        return str(self.values["bootstrap"])

    @property
    def nodes(self) -> int:
        """Instances to run: 1 is a lone host, more a cluster (head + workers)."""
        return int(self.values["nodes"])

    @property
    def confirm_above(self) -> float:
        """`launch` asks before creating anything estimated above this many $ per hour."""
        return float(self.values["confirm_above"])


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", bool: "true or false", float: "a number"}.get(
        kind, kind.__name__
    )


class ProfileSet:
    """All profiles from all files, merged by name (later files override key by key)."""

    def __init__(self, files: Sequence[Path], untrusted: Collection[Path] = ()) -> None:
        self.files = list(files)
        self._raw: dict[str, _RawProfile] = {}
        for path in self.files:
            for raw in read_file(path, untrusted=path.resolve() in untrusted):
                known = self._raw.get(raw.name)
                if known is None:
                    self._raw[raw.name] = raw
                    continue
                for key, value in raw.table.items():
                    if isinstance(value, dict) and isinstance(known.table.get(key), dict):
                        known.table[key] = {**known.table[key], **value}
                    else:
                        known.table[key] = value
                known.origins.update(raw.origins)

    def names(self) -> list[str]:
        return sorted(self._raw)

    def __contains__(self, name: str) -> bool:
        return name in self._raw

    def resolve(
        self, name: str | None, *, provider_names: Sequence[str], check_provider: bool = True
    ) -> Profile:
        """The profile `name` with `extends` applied and common keys validated.

        With no name: the `default` profile when one exists, else built-in defaults only.
        """
        if name is None:
            name = DEFAULT_PROFILE if DEFAULT_PROFILE in self._raw else None
        if name is None:
            profile = Profile("(defaults)", {k: d for k, (_, d) in COMMON_KEYS.items()})
            return profile
        if name not in self._raw:
            known = ", ".join(self.names()) or "none defined"
            raise ProfileError(
                f"unknown profile {name!r} (known: {known})",
                hint="define [profiles.NAME] in orchestrate.toml or pass --config FILE",
            )
        chain: list[str] = []
        table: dict[str, Any] = {}
        origins: dict[str, Origin] = {}
        current: str | None = name
        while current is not None:
            if current in chain:
                raw = self._raw[chain[-1]]
                cycle = " -> ".join([*chain, current])
                raise ProfileError(
                    f"{raw.origins.get('extends', '')}: extends cycle {cycle}",
                    hint="remove one of the extends keys",
                )
            if current not in self._raw:
                raw = self._raw[chain[-1]]
                raise ProfileError(
                    f"{raw.origins.get('extends')}: key 'extends': unknown profile {current!r}",
                    hint=f"known profiles: {', '.join(self.names())}",
                )
            raw = self._raw[current]
            chain.append(current)
            for key, value in raw.table.items():
                if key == "extends":
                    continue
                if isinstance(value, dict) and isinstance(table.get(key, {}), dict):
                    table[key] = {**value, **table.get(key, {})}
                    for sub in value:
                        origins.setdefault(f"{key}.{sub}", raw.origins[f"{key}.{sub}"])
                else:
                    table.setdefault(key, value)
                origins.setdefault(key, raw.origins[key])
            extends = raw.table.get("extends")
            if extends is not None and not isinstance(extends, str):
                raise ProfileError(
                    f"{raw.origins['extends']}: key 'extends' must be a profile name string"
                )
            current = extends
        return _validate(name, table, origins, tuple(chain), provider_names, check_provider)


def _validate(
    name: str,
    table: Mapping[str, Any],
    origins: Mapping[str, Origin],
    chain: tuple[str, ...],
    provider_names: Sequence[str],
    check_provider: bool,
) -> Profile:
    values = {key: default for key, (_, default) in COMMON_KEYS.items()}
    tables: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        where = origins.get(key, Origin("profile"))
        grammar.no_control_anywhere(value, f"{where}: profiles.{name}.{key}")
        if isinstance(value, dict):
            if key not in provider_names:
                shown = key if key.isprintable() else repr(key)  # one line, whatever the key
                raise ProfileError(
                    f"{where}: profiles.{name}: unknown table [{shown}]",
                    hint=f"provider sub-tables are one of: {', '.join(provider_names)}",
                )
            tables[key] = dict(value)
            continue
        if key not in COMMON_KEYS:
            close = [k for k in COMMON_KEYS if k[:3] == key[:3]]
            raise ProfileError(
                f"{where}: profiles.{name}: unknown key {key!r}",
                hint=f"did you mean {close[0]!r}?" if close else "see README's profile keys",
            )
        kind = COMMON_KEYS[key][0]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ProfileError(
                f"{where}: profiles.{name}.{key} must be {_type_name(kind)},"
                f" not {type(value).__name__} {value!r}"
            )
        values[key] = value
    profile = Profile(name, values, tables, dict(origins), chain)
    check_common(profile, provider_names if check_provider else None)
    return profile


def check_common(profile: Profile, provider_names: Sequence[str] | None) -> None:
    """Range checks for common keys; run again after CLI overrides are applied."""
    values = profile.values
    for key in ("port", "remote_port"):
        if not 1 <= int(values[key]) <= 65535:
            raise ProfileError(
                f"{profile.where(key)}{key} must be a TCP port 1-65535, not {values[key]}"
            )
    if int(values["nodes"]) < 1:
        raise ProfileError(
            f"{profile.where('nodes')}nodes must be 1 or more, not {values['nodes']}",
            hint="1 is a lone notebook host; 2 or more make a cluster",
        )
    if values["bootstrap"] not in BOOTSTRAP_MODES:
        raise ProfileError(
            f"{profile.where('bootstrap')}bootstrap must be one of {', '.join(BOOTSTRAP_MODES)},"
            f" not {values['bootstrap']!r}"
        )
    parse_duration(str(values["autostop"]), where=f"{profile.where('autostop')}autostop")
    check_shell_bound(profile)
    provider = values.get("provider")
    if provider_names is not None and provider is not None and provider not in provider_names:
        raise ProfileError(
            f"{profile.where('provider')}unknown provider {provider!r}",
            hint=f"installed providers: {', '.join(provider_names)} (see `orchestrate providers`)",
        )


#: The common keys that reach a host script or `docker run`, and the grammar each obeys.
SHELL_BOUND: dict[str, Callable[[str, str], str]] = {
    "image": grammar.image_reference,
    "container_name": grammar.container_name,
    "container_notebooks_dir": grammar.container_path,
    "notebooks_dir": grammar.host_folder,
    "description": grammar.no_control,
}


def check_shell_bound(profile: Profile) -> None:
    """Values that reach a host script, checked against their grammar (after CLI overrides
    too: `--image` passes the same rule as `image =`)."""
    for key, check in SHELL_BOUND.items():
        check(str(profile.values[key]), f"{profile.where(key)}{key}")
    grammar.finite(
        float(profile.values["confirm_above"]), f"{profile.where('confirm_above')}confirm_above"
    )


def apply_overrides(profile: Profile, overrides: Mapping[str, Any]) -> Profile:
    """CLI flags win over profile values; `None` means the flag was not given."""
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in COMMON_KEYS:
            raise KeyError(key)
        profile.values[key] = value
        profile.origins[key] = Origin(f"--{key.replace('_', '-')}")
    return profile


def load_profile(
    name: str | None,
    *,
    config: Path | None,
    provider_names: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    files: Callable[[Path | None], list[Path]] = default_files,
) -> Profile:
    """Read the files, resolve `name`, apply CLI overrides, and check the result."""
    paths = files(config)
    profiles = ProfileSet(paths, untrusted_files(paths, config))
    profile = profiles.resolve(name, provider_names=provider_names, check_provider=False)
    apply_overrides(profile, overrides or {})
    check_common(profile, provider_names)
    return profile


def profile_snapshot(profile: Profile) -> dict[str, Any]:
    """What the state row keeps so `start`/`down` work without the profile files.

    Read it back with `Profile.from_snapshot` (or `InstanceRow.launched_profile()`).
    """
    return {
        "name": profile.name,
        "values": dict(profile.values),
        "provider_tables": {k: dict(v) for k, v in profile.provider_tables.items()},
    }
