"""The stage script: the needed host steps as one bash script, and the markers it prints.

One stage is one ``bash`` on the host, as root; each step runs in its own ``bash`` from a
file with stdin closed (so an apt prompt cannot eat the script), and the stage prints
progress markers (``##orchestrate step=NAME event=start|done|fail|reboot``) that the runner
(`orchestrate.core.host.runner`) reads back with `parse_marker`.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Sequence

from orchestrate.core.api.errors import HostError
from orchestrate.core.api.hoststeps import Facts

#: What starts a progress marker line in a stage's output.
MARKER = "##orchestrate "

_STAGE_HEAD = r"""#!/usr/bin/env bash
# orchestrate stage: runs each step from its own file, prints progress markers.
set -uo pipefail
ORCHESTRATE_WORKDIR=$(mktemp -d /tmp/orchestrate-stage.XXXXXX) || exit 90
trap 'rm -rf "$ORCHESTRATE_WORKDIR"' EXIT
ORCHESTRATE_REBOOT_FILE=$ORCHESTRATE_WORKDIR/reboot-required
ORCHESTRATE_LOGIN_USER=${SUDO_USER:-$(id -un)}
ORCHESTRATE_LOGIN_HOME=$(getent passwd "$ORCHESTRATE_LOGIN_USER" | cut -d: -f6)
export ORCHESTRATE_WORKDIR ORCHESTRATE_REBOOT_FILE ORCHESTRATE_LOGIN_USER ORCHESTRATE_LOGIN_HOME

run_step() {
    local name=$1 file=$2 rc=0
    printf '\n##orchestrate step=%s event=start\n' "$name"
    bash "$file" </dev/null 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '\n##orchestrate step=%s event=fail rc=%d\n' "$name" "$rc"
        exit "$rc"
    fi
    printf '\n##orchestrate step=%s event=done rc=0\n' "$name"
    if [ -e "$ORCHESTRATE_REBOOT_FILE" ]; then
        printf '##orchestrate step=%s event=reboot\n' "$name"
        exit 0
    fi
}
"""

# The stage is sent on stdin; it is saved to a file first and run from there with stdin
# closed, so no command in it can read the rest of the script as its input.
_STAGE_RUNNER = (
    "f=$(mktemp /tmp/orchestrate-stage-script.XXXXXX) || exit 90; trap 'rm -f \"$f\"' EXIT; "
    'cat >"$f" && bash "$f" </dev/null'
)


def stage_script(scripts: Sequence[tuple[str, str]]) -> str:
    """One bash script running each (step name, step script) in order with markers."""
    parts = [_STAGE_HEAD]
    for i, (name, script) in enumerate(scripts, 1):
        delimiter = f"ORCHESTRATE_STEP_{secrets.token_hex(6)}"
        if not script.endswith("\n"):
            script += "\n"
        parts.append(
            f"cat >\"$ORCHESTRATE_WORKDIR/step-{i}.sh\" <<'{delimiter}'\n{script}{delimiter}\n"
            f'run_step {shlex.quote(name)} "$ORCHESTRATE_WORKDIR/step-{i}.sh"\n'
        )
    parts.append("printf '##orchestrate event=stage-done\\n'\n")
    return "\n".join(parts)


def stage_command(facts: Facts) -> str:
    """The exec request for a stage: bash as root, through `sudo -n` for a non-root login."""
    command = "bash -c " + shlex.quote(_STAGE_RUNNER)
    if facts.user.privilege == "root":
        return command
    if facts.user.privilege == "sudo":
        return "sudo -n " + command
    raise HostError(
        f"{facts.user.name or 'the login user'} cannot run sudo without a password, and host "
        "setup needs root",
        hint="use the image's default login user (passwordless sudo), or set the host up as root",
    )


def parse_marker(line: str) -> dict[str, str] | None:
    """{"step": ..., "event": ..., "rc": ...} for a marker line, {"warning": text} for a
    step's warning, None for ordinary output."""
    at = line.find(MARKER)
    if at < 0:
        return None
    body = line[at + len(MARKER) :]
    if body.startswith("warning "):
        return {"warning": body[len("warning ") :].strip()}
    fields = dict(part.split("=", 1) for part in body.split() if "=" in part)
    return fields if "event" in fields else None
