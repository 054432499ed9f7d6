"""Which current-folder profile files the user has trusted, by content hash.

`./orchestrate.toml` is read in whatever folder the user runs orchestrate from: a cloned
repository or an unpacked archive can carry one. Such a file may choose images and zones,
but not where credentials go: a file that sets an endpoint or a credentials path is refused
until the user runs `orchestrate trust FILE`, which records the file's SHA-256 here (as
`direnv allow` does). Any later change to the file needs a new `trust`. The user's own
config file and a `--config FILE` are the user's choice already and need no record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.files import read_regular, reason
from orchestrate.core.store.paths import config_dir, private_dir, write_private

#: Key names that send credentials somewhere or pick which credentials are used.
SENSITIVE_WORDS = ("endpoint", "credential", "token", "secret", "password")


def is_sensitive(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def store_path() -> Path:
    return config_dir() / "trusted.json"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load() -> dict[str, str]:
    try:
        data = json.loads(read_regular(store_path()).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def is_trusted(path: Path, data: bytes) -> bool:
    """The user trusted exactly these bytes at this (resolved) path."""
    return _load().get(str(path.resolve())) == digest(data)


def trust(path: Path) -> str:
    """Record the file's current content as trusted; returns its digest."""
    resolved = path.resolve()
    try:
        data = read_regular(resolved)
    except OSError as exc:
        raise ProfileError(
            f"cannot trust {path}: {reason(exc)}", hint="name an orchestrate.toml file"
        ) from None
    entries = _load()
    entries[str(resolved)] = digest(data)
    private_dir(config_dir())
    write_private(store_path(), json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return entries[str(resolved)]
