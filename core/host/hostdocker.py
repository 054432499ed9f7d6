"""Running docker on an instance's host from the CLI (logs, stop, down).

Docker's socket belongs to root on a fresh host, and the login user is either root or has
passwordless sudo (host setup requires it), so every command goes through one wrapper.
"""

from __future__ import annotations

import shlex

from orchestrate.core.api.provider import NAME_LABEL
from orchestrate.core.store.state import InstanceRow

_AS_ROOT = 'if [ "$(id -u)" = 0 ]; then d=docker; else d="sudo -n docker"; fi; '


def docker_on_host(args: str) -> str:
    """A shell command that runs `docker ARGS` as root, through `sudo -n` when needed."""
    return f"{_AS_ROOT}$d {args}"


def remove_ours(row: InstanceRow) -> str:
    """A shell command that removes every container orchestrate started for `row` on its
    host: the notebook container by its name, and any other by orchestrate's name label
    (the GPU check's throw-away container of a launch cut short). On a machine that is not
    orchestrate's (`stops_container_only`), that is all `stop` and `down` may take away; the
    notebooks stay in the host folder and `start` makes the container again."""
    name, label = container_of(row), shlex.quote(f"label={NAME_LABEL}={row.name}")
    # Short ids, each once: the notebook container also carries the label, and removing
    # one container twice in one call fails ("removal already in progress").
    by_name = f"$d container inspect -f '{{{{.Id}}}}' -- {name} 2>/dev/null | cut -c1-12"
    return (
        f"{_AS_ROOT}ids=$({{ $d ps -aq --filter {label}; {by_name}; }} | sort -u); "
        '[ -z "$ids" ] || $d rm -f -- $ids >/dev/null'
    )


def container_of(row: InstanceRow) -> str:
    """The notebook container's name for a state row, shell-quoted."""
    return shlex.quote(row.launched_profile().container_name)
