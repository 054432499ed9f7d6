"""Durations as profiles write them ('90s', '60m', '2h', '1d', 'off').

In the public API because plugins read durations from the profile too (autostop's window),
and must read them exactly as core validated them.
"""

from __future__ import annotations

import re

from orchestrate.core.api.errors import ProfileError

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$")


def parse_duration(text: str, *, where: str = "duration") -> int | None:
    """Seconds in '90s', '60m', '2h', '1d' (bare numbers are minutes); None for 'off'."""
    if text.strip().lower() in ("off", "none", "0", "false", "never"):
        return None
    match = _DURATION.match(text)
    if not match:
        raise ProfileError(
            f"{where}: {text!r} is not a duration", hint="write e.g. '30m', '2h' or 'off'"
        )
    number, unit = int(match.group(1)), match.group(2) or "m"
    if number == 0:  # '0s' would power the host off at once: 'off' says what is meant
        raise ProfileError(
            f"{where}: {text!r} is not a duration above zero", hint="write e.g. '30m' or 'off'"
        )
    return number * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
