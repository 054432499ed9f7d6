"""What ``status`` says about autostop: read over SSH from the files the agent keeps.

The agent's state, version and last-stop files are world-readable and hold no secret, so one
``sh -c`` as the login user (no sudo) reads all of it: the step's own probe snippet, run
alone. A stopped instance cannot be asked anything; for it, `inferred_stop_line` says what
the local record implies (orchestrate did not stop it, and autostop was on), and the host's
last-stop file confirms it at the next ``start``.

Warnings follow the issue's rule: a running instance without autostop, or past its window.
"""

from __future__ import annotations

import shlex
import time
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.durations import parse_duration
from orchestrate.core.api.errors import OrchestrateError

if TYPE_CHECKING:
    from orchestrate.plugins.host.autostop.step import HostAutostop, HostPaths

# The agent and step modules are imported where a host's files are read or a duration is
# worded: `status` over many rows needs only the profile's setting for most of its notes.

#: Grace for a check that runs late (a timer every minute, a slow host), in seconds.
LATE_GRACE_S = 120.0


def status_command(paths: HostPaths | None = None) -> str:
    """The exec request that reads the agent's files on a running host (login user, no
    sudo); feed its stdout to `parse_status`."""
    from orchestrate.plugins.host.autostop.step import HostPaths, probe_snippet

    return "sh -c " + shlex.quote(probe_snippet(paths or HostPaths()))


def parse_status(text: str) -> HostAutostop:
    """The agent as `status_command` found it."""
    from orchestrate.plugins.host.autostop.step import parse_probe

    return parse_probe(text if text.strip() else "running=no\n")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def window_of(setting: str | None) -> float | None:
    """The profile's ``autostop`` value in seconds; None for off (or unset)."""
    if setting is None:
        return None
    value = parse_duration(setting, where="autostop")
    return float(value) if value is not None else None


def warnings(seen: HostAutostop | None, setting: str | None, now: float | None = None) -> list[str]:
    """Warnings for a RUNNING instance: no autostop, the agent not running or not checking,
    the host idle past its window, or the agent blind to the kernels.

    ``seen`` is None when the host could not be read (no SSH): only the profile speaks then.
    """
    now = time.time() if now is None else now
    window = window_of(setting)
    if window is None:
        return ["running without autostop (autostop = off): it bills until you stop it"]
    if seen is None:
        return []
    from orchestrate.plugins.host.autostop import agent

    if not seen.installed or not seen.running:
        return [
            "running without autostop: the agent is not running on the host "
            "(`orchestrate start` or `launch` installs and re-arms it)"
        ]
    found: list[str] = []
    state = seen.state
    interval = _number(state.get("interval_seconds")) or 60.0
    last_check = _number(state.get("last_check"))
    if last_check is not None and now - last_check > 3 * interval + LATE_GRACE_S:
        found.append(
            f"the autostop agent has not checked for {agent.human(now - last_check)} "
            f"(see {agent.DEFAULT_LOG_FILE} on the host)"
        )
    idle_since = _number(state.get("idle_since"))
    if idle_since is not None and now - idle_since > window + interval + LATE_GRACE_S:
        found.append(
            f"idle for {agent.human(now - idle_since)}, past its {agent.human(window)} autostop "
            f"window: the power-off did not happen (see {agent.DEFAULT_LOG_FILE} on the host)"
        )
    error = state.get("jupyter_error")
    if isinstance(error, str) and error:
        found.append(
            f"autostop cannot read Jupyter's kernels ({error}), so it will not stop this host"
        )
    return found


def activity_line(seen: HostAutostop, now: float | None = None) -> str | None:
    """ "autostop: idle for 12 min of 60 min" / "autostop: in use (1 connection(s) ...)"."""
    from orchestrate.plugins.host.autostop import agent

    now = time.time() if now is None else now
    state = seen.state
    window = _number(state.get("window_seconds"))
    if not state or window is None:
        return None
    if state.get("state") == agent.ACTIVE:
        reasons = state.get("active") or []
        first = str(reasons[0]) if isinstance(reasons, list) and reasons else "in use"
        return f"autostop: in use ({first}); powers off after {agent.human(window)} idle"
    idle_since = _number(state.get("idle_since"))
    if idle_since is None:
        return f"autostop: armed, powers off after {agent.human(window)} idle"
    return f"autostop: idle for {agent.human(now - idle_since)} of {agent.human(window)}"


def last_stop_line(seen: HostAutostop) -> str | None:
    """ "stopped by autostop after 60 min idle (2025-01-15T12:00:00Z: no connection to port
    8888; ...)": the agent's record of its last power-off, read at the next ``start``. A
    cluster's head adds what it did about its workers ("asked 2 workers to stop; ...")."""
    last = seen.last_stop
    message = last.get("message")
    if not isinstance(message, str) or not message:
        return None
    when = last.get("time")
    reason = last.get("reason")
    detail = "; ".join(str(x) for x in (when, reason, last.get("cluster")) if x)
    return f"{message} ({detail})" if detail else message


def inferred_stop_line(setting: str | None) -> str | None:
    """For an instance the cloud reports stopped that orchestrate did not stop: with autostop
    on, the agent is what stopped it. None when autostop was off."""
    window = window_of(setting)
    if window is None:
        return None
    from orchestrate.plugins.host.autostop import agent

    return f"stopped by autostop after {agent.human(window)} idle"


#: What `status_notes` gives for a host that could not be read.
UNREADABLE = "could not read the autostop agent: {}"


def status_notes(row: Any, session: Any) -> list[str]:
    """Autostop's lines for one `status` row (see the ``orchestrate_status_notes`` hook).

    Without a session, the profile alone speaks: a running instance without autostop bills
    until stopped; a stopped one that orchestrate did not stop was stopped by the agent.
    With one, the agent's files on the host add what it is doing and when it last stopped.
    """
    setting: str = row.launched_profile().autostop
    try:
        window_of(setting)
    except OrchestrateError:  # a snapshot no longer valid speaks of nothing here
        return []
    if row.status in ("stopped", "terminated", "stopping"):
        if row.extra.get("stopped_by") == "autostop":
            line = inferred_stop_line(setting)
            return [line] if line else []
        return []
    if row.status != "running":
        return []
    if session is None:
        return warnings(None, setting)
    try:
        result = session.run(status_command(), timeout=20)
    except OrchestrateError as exc:
        return [*warnings(None, setting), UNREADABLE.format(exc.line())]
    seen = parse_status(result.stdout)
    notes = [line for line in (activity_line(seen), last_stop_line(seen)) if line]
    return notes + [w for w in warnings(seen, setting) if w not in notes]
