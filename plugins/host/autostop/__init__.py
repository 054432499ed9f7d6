"""The autostop agent: a host step that installs a watcher which powers an idle host off.

- `agent` runs ON THE HOST (Python 3 standard library only); the step ships its source.
- `step` is the plugin: ``orchestrate_host_steps(context)`` contributes the ``autostop``
  step (install, reconfigure, re-arm, or remove with ``autostop = "off"``).
- `report` reads what the agent left on the host, for ``status``.

Registered as the built-in plugin ``host.autostop`` (this package; the hook implementation
is re-exported here so the package itself is the plugin). The re-export is resolved on
first use (PEP 562): `status` imports `report` from this package for its notes, and must
not pay for the step, the host-step machinery and the agent's imports on every listing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["orchestrate_host_steps"]


def __getattr__(name: str) -> Any:
    if name == "orchestrate_host_steps":
        from orchestrate.plugins.host.autostop.step import orchestrate_host_steps

        return orchestrate_host_steps
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """pluggy finds hook implementations through dir(), so the lazy name is listed."""
    return sorted([*globals(), *__all__])
