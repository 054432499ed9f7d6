"""Where orchestrate keeps its files.

platformdirs gives the per-user config and state folders each OS expects. ORCHESTRATE_HOME
puts both under one folder instead: tests and CI use it so nothing touches the real home.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

APP = "orchestrate"


def _home_override() -> Path | None:
    value = os.environ.get("ORCHESTRATE_HOME")
    return Path(value).expanduser() if value else None


def config_dir() -> Path:
    """Folder of the user's profile file (`config.toml`) and SSH key."""
    home = _home_override()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP))


def state_dir() -> Path:
    """Folder of the state database, host logs and tunnel pid files."""
    home = _home_override()
    if home is not None:
        return home / "state"
    import platformdirs

    return Path(platformdirs.user_state_dir(APP))


def private_dir(path: Path) -> Path:
    """Create `path` readable by the user alone: it holds tokens, keys and pinned host keys."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def user_config_file() -> Path:
    return config_dir() / "config.toml"


def state_db() -> Path:
    return state_dir() / "state.db"


def host_log(name: str) -> Path:
    """The full output of host steps for one instance; the CLI shows only the tail."""
    return private_dir(state_dir() / "logs") / f"{name}.log"


def write_private(path: Path, text: str) -> None:
    """Write through a temporary file of this writer's own (mkstemp: 0600, unique name), so
    concurrent orchestrate processes never rename each other's half-written file away."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
