"""Reading one profile file: TOML, the line of every key, and the current folder's trust.

Kept apart from resolving profiles (`profiles`): this part knows files and lines, that one
knows keys, `extends` and defaults.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.store import tomlparse

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class Origin:
    """Where a value came from, for error messages and `profiles --show`."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass
class _RawProfile:
    name: str
    table: dict[str, Any]
    origins: dict[str, Origin]


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]*?)\s*\]")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|[A-Za-z0-9_-]+)\s*=")


class LineIndex:
    """Where each table header and key is in a file (tomllib gives no positions).

    Built in one pass over the lines, so finding every key's line costs one scan of the
    file, not one scan per key (5000 keys would otherwise take 25 million line matches).
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.scanned = 0
        self._headers: dict[str, int] = {}
        self._last_header: dict[str, int] = {}
        self._keys: dict[tuple[str, str], int] = {}
        table = ""
        for number, text in enumerate(lines, start=1):
            self.scanned += 1
            header = _HEADER.match(text)
            if header is not None:
                table = ".".join(part.strip().strip('"') for part in header.group(1).split("."))
                self._headers.setdefault(table, number)
                self._last_header[table] = number
                continue
            if text.lstrip().startswith("[["):
                table = "\0"  # an array of tables: no key of ours lives there
                continue
            key = _KEY.match(text)
            if key is not None:
                self._keys.setdefault((table, key.group(1).strip('"')), number)

    def line_of(self, table: str, key: str | None) -> int | None:
        """The line of `key` in `[table]` (of the header itself for None); the table's last
        header when the key is not written there plainly (an inline table, a dotted key)."""
        if key is None:
            return self._headers.get(table)
        return self._keys.get((table, key)) or self._last_header.get(table)


#: Profile files are a few kilobytes; this leaves room for generated ones.
PROFILE_CAP = 8 << 20


def read_file(path: Path, *, untrusted: bool = False) -> list[_RawProfile]:
    """Parse one profile file into raw profiles, with the line of each key.

    `untrusted`: the current folder's file, which may not set endpoints or credentials
    until the user trusts exactly these bytes (`orchestrate trust`).
    """
    from orchestrate.core.api.files import read_regular, reason

    try:
        data_bytes = read_regular(path, cap=PROFILE_CAP)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile file: {reason(exc)}") from None
    try:
        text = data_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        at_line = data_bytes[: exc.start].count(b"\n") + 1
        raise ProfileError(
            f"{path}:{at_line}: not UTF-8 text (byte 0x{data_bytes[exc.start]:02x})",
            hint="TOML files are UTF-8: save it as UTF-8",
        ) from None
    try:
        data = tomlparse.loads(text)
    except ValueError as exc:
        raise ProfileError(f"{path}: invalid TOML: {exc}", hint="fix the syntax") from exc
    index = LineIndex(text.splitlines())
    unknown_top = [k for k in data if k != "profiles"]
    if unknown_top:
        key = unknown_top[0]
        raise ProfileError(
            f"{Origin(str(path), index.line_of(key, None) or index.line_of('', key))}: "
            f"unknown top-level key {key!r}",
            hint="profiles go in [profiles.NAME] tables",
        )
    profiles = data.get("profiles", {})
    if not isinstance(profiles, dict):
        raise ProfileError(f"{path}: 'profiles' must be a table of [profiles.NAME] tables")
    found = []
    for name, table in profiles.items():
        where = Origin(str(path), index.line_of(f"profiles.{name}", None))
        if not isinstance(table, dict):
            raise ProfileError(f"{where}: profiles.{name} must be a table, not a value")
        if not _NAME.match(name):
            raise ProfileError(
                f"{where}: profile name {name!r} is not allowed",
                hint="use lowercase letters, digits and dashes, starting with a letter",
            )
        origins: dict[str, Origin] = {}
        for key, value in table.items():
            if isinstance(value, dict):
                line = index.line_of(f"profiles.{name}.{key}", None)
                origins[key] = Origin(str(path), line or index.line_of(f"profiles.{name}", key))
                for sub in value:
                    origins[f"{key}.{sub}"] = Origin(
                        str(path), index.line_of(f"profiles.{name}.{key}", sub)
                    )
            else:
                origins[key] = Origin(str(path), index.line_of(f"profiles.{name}", key))
        found.append(_RawProfile(name, table, origins))
    if untrusted:
        _refuse_untrusted(path, data_bytes, found)
    return found


def _refuse_untrusted(path: Path, data: bytes, found: Sequence[_RawProfile]) -> None:
    """The current folder's file may not choose endpoints or credentials unless trusted."""
    from orchestrate.core.store import trust

    trusted: bool | None = None  # read the trust record once, and only when needed
    for raw in found:
        for key, value in raw.table.items():
            pairs = (
                [(f"{key}.{sub}", sub) for sub in value] if isinstance(value, dict) else []
            ) + [(key, key)]
            for origin_key, name in pairs:
                if not trust.is_sensitive(name):
                    continue
                if trusted is None:
                    trusted = trust.is_trusted(path, data)
                if trusted:
                    return
                shown = origin_key if origin_key.isprintable() else repr(origin_key)
                raise ProfileError(
                    f"{raw.origins.get(origin_key, Origin(str(path)))}: profiles.{raw.name}."
                    f"{shown} is set by the current folder's file, which is not trusted",
                    hint=f"review it, then run `orchestrate trust {path}`, or name it with"
                    " --config",
                )


def folder_file() -> Path:
    """The current folder's profile file (which may not exist)."""
    return Path("orchestrate.toml").resolve()


def untrusted_files(files: Sequence[Path], config: Path | None) -> set[Path]:
    """Of `files`, the one the user did not name: the current folder's file, unless it is
    also the user's config file or the `--config FILE`."""
    from orchestrate.core.store.paths import user_config_file

    chosen = {user_config_file().resolve()}
    if config is not None:
        chosen.add(config.resolve())
    folder = folder_file()
    return {folder} if folder in {f.resolve() for f in files} - chosen else set()


def searched_files(config: Path | None) -> list[Path]:
    """Every file profiles are read from, in order, whether it exists or not: the user's
    `config.toml` (under `$ORCHESTRATE_HOME/config/` when that is set), `./orchestrate.toml`,
    then `--config FILE`; a later file's profile of the same name wins."""
    from orchestrate.core.store.paths import user_config_file

    return [user_config_file(), folder_file(), *([config] if config is not None else [])]


def default_files(config: Path | None) -> list[Path]:
    """The files read, in order, that exist (an explicit --config must exist)."""
    from orchestrate.core.store.paths import user_config_file

    files = [p for p in (user_config_file(), folder_file()) if p.is_file()]
    if config is not None:
        if not config.is_file():
            raise ProfileError(f"--config {config}: no such file", hint="check the path")
        files.append(config)
    return files
