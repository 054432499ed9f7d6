"""The autostop agent: a host step that installs a watcher which powers an idle host off.

- `agent` runs ON THE HOST (Python 3 standard library only); the step ships its source.
- `step` builds the ``autostop`` step (install, reconfigure, re-arm, or remove with
  ``autostop = "off"``).
- `report` reads what the agent left on the host, for ``status``.

Registered as the built-in plugin ``host.autostop`` (this package). Its hook
implementations are defined here, as plain module functions (pluggy 1.7 finds them with
``inspect.getattr_static``, which sees nothing a module ``__getattr__`` would provide), and
import their module on first call: `status` over many rows calls the notes hook and must
not pay for the step, the host-step machinery and the agent on every listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from orchestrate.core.api.hooks import hookimpl

if TYPE_CHECKING:
    from orchestrate.core.api.hoststeps import HostStep, StepContext


@hookimpl
def orchestrate_host_steps(context: StepContext) -> list[HostStep]:
    """The autostop step, unless the caller did not say (``context.autostop`` None): a
    profile always says, ``"60m"`` by default."""
    if context.autostop is None:
        return []
    from orchestrate.plugins.host.autostop.step import autostop_step

    return [autostop_step(context)]


@hookimpl
def orchestrate_status_notes(row: Any, session: Any) -> Sequence[str]:
    """What autostop adds to a row in `status`: warnings from the profile's setting, and
    the agent's own view when `status NAME` hands an open session to a running host."""
    from orchestrate.plugins.host.autostop.report import status_notes

    return status_notes(row, session)
