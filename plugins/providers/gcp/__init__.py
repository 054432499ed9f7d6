"""The Google Compute Engine provider, registered through the provider hook.

Importing this package loads no libcloud: the driver is built on the first API call.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider
from orchestrate.plugins.providers.gcp.options import GcpOptions
from orchestrate.plugins.providers.gcp.provider import GcpProvider

__all__ = ["GcpOptions", "GcpProvider", "orchestrate_register_providers"]


@hookimpl
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    """Offer `GcpProvider` as ``--provider gcp``."""
    register(GcpProvider())
