"""The stage script: the needed host steps as one bash script, and the markers it prints.

One stage is one ``bash`` on the host, as root. It runs the steps as a dependency graph
(`step_graph`): a step starts as soon as the steps it comes after are done, so the image
pull runs while the driver installs. Each step runs in its own ``bash`` from a file with
stdin closed (so an apt prompt cannot eat the script); its output lines are tagged with its
name (``##orchestrate out=NAME ...``), and the stage prints progress markers
(``##orchestrate step=NAME event=start|done|fail|reboot``) that the runner
(`orchestrate.core.host.runner`) reads back with `split_output` and `parse_marker`. A
failure or a reboot request starts nothing new; the steps already running finish first.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from orchestrate.core.api.errors import HostError
from orchestrate.core.api.hoststeps import AUTOSTOP_STEP, Facts, HostStep

#: What starts a progress marker line in a stage's output.
MARKER = "##orchestrate "
#: What starts a step's output line: the marker, ``out=NAME`` and a space.
OUTPUT = MARKER + "out="

_STAGE_HEAD = r"""#!/usr/bin/env bash
# orchestrate stage: runs the steps as a dependency graph, each from its own file, with
# progress markers; independent steps run at the same time.
set -uo pipefail
ORCHESTRATE_WORKDIR=$(mktemp -d /tmp/orchestrate-stage.XXXXXX) || exit 90
trap 'rm -rf "$ORCHESTRATE_WORKDIR"' EXIT
ORCHESTRATE_LOGIN_USER=${SUDO_USER:-$(id -un)}
# the passwd entry's sixth field, cut by the shell (a `cut` is one more process start)
ORCHESTRATE_LOGIN_HOME=$(getent passwd "$ORCHESTRATE_LOGIN_USER")
ORCHESTRATE_LOGIN_HOME=${ORCHESTRATE_LOGIN_HOME#*:*:*:*:*:}
ORCHESTRATE_LOGIN_HOME=${ORCHESTRATE_LOGIN_HOME%%:*}
export ORCHESTRATE_WORKDIR ORCHESTRATE_LOGIN_USER ORCHESTRATE_LOGIN_HOME
# Finished steps report "INDEX RC" on this FIFO: the scheduler blocks on it, so the next
# step starts the moment its last dependency is done (no polling).
mkfifo "$ORCHESTRATE_WORKDIR/finished" || exit 90
exec 3<>"$ORCHESTRATE_WORKDIR/finished"

# Every output line of a step is tagged with its name: steps run at the same time, and the
# runner gives each its own output tail.
tag_lines() { awk -v tag="##orchestrate out=$1 " '{ print tag $0; fflush() }'; }

run_job() {
    local name=$1 file=$2 index=$3 rc=0
    # Each step has its own reboot file, so a step that finishes alongside the driver does
    # not appear to ask for its reboot.
    ORCHESTRATE_REBOOT_FILE=$ORCHESTRATE_WORKDIR/reboot-$index
    export ORCHESTRATE_REBOOT_FILE
    # fd 3 (the FIFO) is the scheduler's: a daemon a step starts must not inherit it
    bash "$file" </dev/null 3>&- 2>&1 | tag_lines "$name"
    rc=${PIPESTATUS[0]}
    # The step ran with the usual SIGPIPE. From here a reader that is gone (the launch was
    # interrupted, its connection dropped) must not kill this job before it reports on fd 3:
    # the scheduler would wait for that report forever, a root shell left on the host.
    trap '' PIPE
    if [ "$rc" -ne 0 ]; then
        printf '##orchestrate step=%s event=fail rc=%d\n' "$name" "$rc"
    else
        printf '##orchestrate step=%s event=done rc=0\n' "$name"
        if [ -e "$ORCHESTRATE_REBOOT_FILE" ]; then
            printf '##orchestrate step=%s event=reboot\n' "$name"
        fi
    fi
    printf '%s %s\n' "$index" "$rc" >&3
}

# run_graph: start every step whose dependencies are done; after a failure or a reboot
# request start nothing new, let the running steps finish (an apt transaction or an image
# pull cut short is worse than waiting), then end the stage.
run_graph() {
    local i d rc ready running=0 stop='' fail_rc=0
    local -a state=()
    for i in "${!STEP_NAMES[@]}"; do state[i]=waiting; done
    while :; do
        if [ -z "$stop" ]; then
            for i in "${!STEP_NAMES[@]}"; do
                [ "${state[i]}" = waiting ] || continue
                ready=1
                for d in ${STEP_AFTER[i]}; do
                    [ "${state[d]}" = ok ] || ready=0
                done
                [ "$ready" -eq 1 ] || continue
                state[i]=running
                running=$((running + 1))
                printf '##orchestrate step=%s event=start\n' "${STEP_NAMES[i]}"
                run_job "${STEP_NAMES[i]}" "$ORCHESTRATE_WORKDIR/step-$i.sh" "$i" &
            done
        fi
        [ "$running" -gt 0 ] || break
        read -r i rc <&3 || exit 91
        running=$((running - 1))
        if [ "$rc" -ne 0 ]; then
            state[i]=failed
            stop=fail
            [ "$fail_rc" -ne 0 ] || fail_rc=$rc
        else
            state[i]=ok
            if [ -e "$ORCHESTRATE_WORKDIR/reboot-$i" ] && [ -z "$stop" ]; then stop=reboot; fi
        fi
    done
    wait
    [ "$fail_rc" -eq 0 ] || exit "$fail_rc"
    if [ "$stop" = reboot ]; then
        printf '##orchestrate event=stage-reboot\n'
        exit 0
    fi
    for i in "${!STEP_NAMES[@]}"; do
        [ "${state[i]}" = ok ] || exit 92
    done
}
"""

# The stage is sent on stdin; it is saved to a file first and run from there with stdin
# closed, so no command in it can read the rest of the script as its input.
_STAGE_RUNNER = (
    "f=$(mktemp /tmp/orchestrate-stage-script.XXXXXX) || exit 90; trap 'rm -f \"$f\"' EXIT; "
    'cat >"$f" && bash "$f" </dev/null'
)


def step_graph(steps: Sequence[HostStep]) -> dict[str, tuple[str, ...]]:
    """What each step of a stage waits for: its ``after``/``after_optional`` steps that are
    in the stage (the others ran before or are not needed), and the autostop step, which
    every other step waits for so the idle power-off is armed before anything that can
    hang or take long."""
    names = {step.name for step in steps}
    graph: dict[str, tuple[str, ...]] = {}
    for step in steps:
        deps = [d for d in (*step.after, *step.after_optional) if d in names]
        if step.name != AUTOSTOP_STEP and AUTOSTOP_STEP in names and AUTOSTOP_STEP not in deps:
            deps.append(AUTOSTOP_STEP)
        graph[step.name] = tuple(deps)
    return graph


def stage_script(
    scripts: Sequence[tuple[str, str]], after: Mapping[str, Sequence[str]] | None = None
) -> str:
    """One bash script running each (step name, step script) with markers.

    ``after`` (from `step_graph`) says what each step waits for; steps with nothing between
    them run at the same time. Without it each step waits for the one before (one at a
    time, in the given order). Names in ``after`` that are not in the stage are ignored.
    """
    index = {name: i for i, (name, _) in enumerate(scripts)}
    parts = [_STAGE_HEAD]
    names: list[str] = []
    waits: list[str] = []
    for i, (name, script) in enumerate(scripts):
        if not script.endswith("\n"):
            script += "\n"
        # A quoted word, written by the builtin printf: bash parses it from the script it
        # reads in blocks, where a here-document is read back a byte at a time (about 30
        # KB for a GPU host's stage) and a `cat` per step is a process start.
        target = f'"$ORCHESTRATE_WORKDIR/step-{i}.sh"'
        parts.append(f"# shellcheck disable=SC2016\nprintf '%s' {shlex.quote(script)} >{target}\n")
        names.append(shlex.quote(name))
        if after is None:
            deps = [i - 1] if i else []
        else:
            deps = sorted({index[d] for d in after.get(name, ()) if d in index and d != name})
        waits.append(shlex.quote(" ".join(map(str, deps))))
    parts.append(f"STEP_NAMES=({' '.join(names)})\nSTEP_AFTER=({' '.join(waits)})\nrun_graph\n")
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


def probe_then_stage_command(probe: str) -> str:
    """One exec that runs the probe (`probe.probe_script`) and the stage the runner answers
    with on stdin, as root; EOF with nothing before it runs nothing.

    The runner uses it after a reboot, instead of a second channel, exec and root shell:
    the stage's shell (sudo, bash, the script's temp file) starts beside the probe and
    waits for the script while the runner plans from the facts. The probe runs with stdin
    closed, so nothing in it can read the stage. A login that is neither root nor a
    passwordless sudoer starts no stage (the runner refuses with `stage_command`'s
    message).
    """
    runner = shlex.quote(_STAGE_RUNNER)
    # No `sudo -n true` first: a refused sudo starts nothing by itself, and each sudo is a
    # few ms of CPU taken from the probe that runs beside it.
    head = (
        "exec 3<&0\n"
        'if [ "$(id -u)" -eq 0 ]; then bash -c ' + runner + " <&3 &\n"
        "else sudo -n bash -c " + runner + " <&3 &\n"
        "fi\n"
        "stage=$!\n"
        "exec 3<&-\n"
    )
    tail = '[ -z "$stage" ] || wait "$stage"\n'
    script = head + "{\n" + probe.rstrip("\n") + "\n} </dev/null\n" + tail
    return "sh -c " + shlex.quote(script)


def split_output(line: str) -> tuple[str, str] | None:
    """(step name, output line) for a step's tagged output line, None for anything else."""
    if not line.startswith(OUTPUT):
        return None
    name, _, text = line[len(OUTPUT) :].partition(" ")
    return name, text


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
