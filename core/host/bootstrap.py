"""Startup-script mode (`bootstrap = "startup-script"`): the seed's one-step variant.

The host setup goes into the instance's `startup-script` metadata, so the cloud runs it at
first boot (and at every boot after, which is how a reboot the driver needs is followed
through: every step is idempotent). `launch` then only waits, over SSH, for the completion
marker, and runs the usual probe, which finds (nearly) nothing left to do.

Steps whose script carries a secret (the notebook's token) never go into metadata, which
anyone with read access to the project can see; they run over SSH afterwards as usual.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from orchestrate.core.api.errors import HostError
from orchestrate.core.api.hoststeps import StepContext, collect_steps, require_autostop
from orchestrate.core.api.retry import Retry
from orchestrate.core.api.templates import heredoc_delimiter

DONE_FILE = "/var/lib/orchestrate/bootstrap.done"
LOG_FILE = "/var/log/orchestrate-bootstrap.log"


def _uses_secret(step: Any, context: StepContext, facts: Any) -> bool:
    """A script that changes with the token embeds it: keep it out of metadata."""
    one = step.script(dataclasses.replace(context, token="a" * 48), facts)
    two = step.script(dataclasses.replace(context, token="b" * 48), facts)
    return bool(one != two)


def startup_script(hook: Any, context: StepContext) -> str:
    """The startup script: the secret-free steps for a fresh host, then the marker."""
    from orchestrate.core.host.runner import assumed_facts
    from orchestrate.core.host.stagescript import stage_script, step_graph

    facts = assumed_facts(context)
    every = collect_steps(hook, context)
    require_autostop(every, context)
    steps = [s for s in every if not _uses_secret(s, context, facts)]
    stage = stage_script([(s.name, s.script(context, facts)) for s in steps], step_graph(steps))
    delimiter = heredoc_delimiter(stage, "ORCHESTRATE_BOOTSTRAP_STAGE")
    return f"""#!/usr/bin/env bash
# orchestrate bootstrap: host setup at boot; idempotent, so it runs again after a reboot.
set -uo pipefail
mkdir -p "$(dirname {DONE_FILE})"
[ -e {DONE_FILE} ] && exit 0
stage=$(mktemp)
cat >"$stage" <<'{delimiter}'
{stage}{delimiter}
out=$(bash "$stage" 2>&1 | tee -a {LOG_FILE})
rm -f "$stage"
case "$out" in
    *"event=reboot"*) systemctl reboot || reboot ;;
    *"event=stage-done"*) date -u +%FT%TZ >{DONE_FILE} ;;
    *) echo "orchestrate bootstrap failed; see {LOG_FILE}" >&2; exit 1 ;;
esac
"""


def wait_done(
    session: Any,
    progress: Callable[[str], None],
    *,
    deadline_s: float = 1800.0,
    interval_s: float = 5.0,
) -> Any:
    """Wait for the startup script's marker, reconnecting across reboots; returns the
    session to use afterwards (a new one after a reboot)."""
    start = time.monotonic()
    said = False

    def finished() -> bool:
        nonlocal session, said
        try:
            result = session.run(f"test -e {DONE_FILE} && cat {DONE_FILE}", timeout=30)
            if result.rc == 0:
                progress(f"startup script finished at {result.stdout.strip()}")
                return True
        except HostError:
            session = session.reconnect(
                deadline_s=max(60.0, deadline_s - (time.monotonic() - start))
            )
        if not said:
            progress("waiting for the startup script to set the host up")
            said = True
        return False

    every_interval = Retry(deadline_s=deadline_s, first_s=interval_s, max_s=interval_s)
    _, done = every_interval.poll(finished, bool)
    if not done:
        raise HostError(
            f"the startup script did not finish within {deadline_s / 60:.0f} min",
            hint=f"see {LOG_FILE} on the host (`orchestrate ssh NAME -- sudo tail {LOG_FILE}`)",
        )
    return session
