"""Running docker on an instance's host from the CLI (logs, stop, down).

Docker's socket belongs to root on a fresh host, and the login user is either root or has
passwordless sudo (host setup requires it), so every command goes through one wrapper.
"""

from __future__ import annotations

import shlex

from orchestrate.core.store.state import InstanceRow


def docker_on_host(args: str) -> str:
    """A shell command that runs `docker ARGS` as root, through `sudo -n` when needed."""
    return f'if [ "$(id -u)" = 0 ]; then d=docker; else d="sudo -n docker"; fi; $d {args}'


def container_of(row: InstanceRow) -> str:
    """The notebook container's name for a state row, shell-quoted."""
    return shlex.quote(row.launched_profile().container_name)
