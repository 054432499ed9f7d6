"""Money and time as orchestrate bills and words them, without any price table.

`status` words every running row's cost from the price `launch` stored in the state: it
needs this arithmetic and these lines, never the price file or its data classes
(`core.prices`, which uses this module for its own lines).
"""

from __future__ import annotations

import time

SECONDS_PER_HOUR = 3600.0


def billed_seconds(started_at: float, now: float, minimum_seconds: float = 60.0) -> float:
    """Seconds billed for a run from `started_at` to `now`: per second, with the providers'
    one-minute minimum per start; nothing for a start in the future (clock skew)."""
    elapsed = now - started_at
    if elapsed <= 0:
        return 0.0
    return max(elapsed, minimum_seconds)


def cost_so_far(
    per_hour: float, started_at: float, now: float | None = None, minimum_seconds: float = 60.0
) -> float:
    """What the current run has cost: ``per_hour`` times the billed hours since the start."""
    now = time.time() if now is None else now
    return per_hour * billed_seconds(started_at, now, minimum_seconds) / SECONDS_PER_HOUR


def confirm_needed(price: float | None, threshold: float | None) -> bool:
    """Whether `launch` must ask before creating: the price is above the threshold.

    ``threshold`` None switches confirmation off; `--yes` skips the question. An unknown
    price (a provider without prices, a shape missing from the list) asks only when the
    threshold is 0, "ask before every launch": above 0 it cannot be compared, and asking
    every time would make `--yes` a habit that hides the questions that matter.
    """
    if threshold is None:
        return False
    if threshold < 0:
        raise ValueError(f"the confirmation threshold must be >= 0, not {threshold}")
    if price is None:
        return threshold == 0
    return price > threshold


# -- lines for the CLI ---------------------------------------------------------------------


def money(amount: float | None) -> str:
    """$3.67, $0.095, $0.0068: enough digits that a small price does not print as $0.00."""
    if amount is None:
        return "$?"
    if amount >= 1:
        return f"${amount:,.2f}"
    if amount >= 0.01:
        return f"${amount:.3f}"
    return f"${amount:.4f}"


def duration(seconds: float) -> str:
    """ "3d 4h", "2h 05m", "12m", "40s"."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m"
    return f"{secs}s"


def spent_line(
    per_hour: float | None,
    started_at: float,
    now: float | None = None,
    minimum_seconds: float = 60.0,
) -> str:
    """The cost line `status` prints under a running instance.

    "about $0.94 so far at $0.45/h" (or "cost unknown ..." without a price). The uptime is
    on the row itself, in the same `duration` words: said once.
    """
    now = time.time() if now is None else now
    if per_hour is None:
        return "cost unknown (no price for this shape)"
    spent = cost_so_far(per_hour, started_at, now, minimum_seconds)
    return f"about {money(spent)} so far at {money(per_hour)}/h"
