"""What a launch that failed or was interrupted leaves billing, said in one line.

A failure after the instance exists must never leave a silent bill: the user learns that it
is still running, at about what price, whether autostop will stop it and when, and the
command that deletes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrate.core.api.durations import parse_duration
from orchestrate.core.api.errors import OrchestrateError
from orchestrate.core.money.billing import duration, money

if TYPE_CHECKING:
    from orchestrate.core.store.state import State


def still_running_note(state: State, name: str, *, armed: bool) -> str | None:
    """The line for instance `name`, or None when nothing of it can be billing.

    `armed`: the autostop agent is known to run on the host (set up before, or its step
    finished in this launch).
    """
    row = state.get(name)
    if row is None or row.cloud_id is None or row.status in ("stopped", "terminated"):
        return None
    price = row.extra.get("price_per_hour")
    at = f" at about {money(price)}/h" if isinstance(price, (int, float)) else ""
    setting = row.launched_profile().autostop
    try:
        window = parse_duration(setting, where="autostop")
    except OrchestrateError:
        window = None
    if window is None:
        stop = "autostop is off, so it bills until you stop it"
    elif armed:
        stop = f"autostop powers it off after {duration(window)} idle"
    else:
        stop = "autostop was not armed yet, so it bills until you stop it"
    return f"{name} is still running{at}; {stop}; `orchestrate down {name}` deletes it"
