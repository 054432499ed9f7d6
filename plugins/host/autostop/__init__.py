"""The autostop agent: a host step that installs a watcher which powers an idle host off.

- `agent` runs ON THE HOST (Python 3 standard library only); the step ships its source.
- `step` is the plugin: ``orchestrate_host_steps(context)`` contributes the ``autostop``
  step (install, reconfigure, re-arm, or remove with ``autostop = "off"``).
- `report` reads what the agent left on the host, for ``status``.

Registered as the built-in plugin ``host.autostop`` (this package; the hook implementation
is re-exported here so the package itself is the plugin).
"""

from orchestrate.plugins.host.autostop.step import orchestrate_host_steps

__all__ = ["orchestrate_host_steps"]
