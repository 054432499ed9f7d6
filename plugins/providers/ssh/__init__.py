"""The existing-host provider (``--provider ssh --host user@address[:port]``), registered
through the provider hook. No cloud SDK is involved at all.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider
from orchestrate.plugins.providers.ssh.options import SshOptions
from orchestrate.plugins.providers.ssh.provider import SshProvider

__all__ = ["SshOptions", "SshProvider", "orchestrate_register_providers"]


@hookimpl
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    """Offer `SshProvider` as ``--provider ssh``."""
    register(SshProvider())
