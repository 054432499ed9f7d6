"""orchestrate-linode: Linode (Akamai) GPU instances as an orchestrate provider.

A third-party plugin: this distribution's entry point (group ``orchestrate``, name
``linode``) points at this module, and orchestrate calls the hook below when it builds its
provider list. Importing it loads no libcloud.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider

from orchestrate_linode.options import LinodeOptions
from orchestrate_linode.provider import LinodeProvider

__all__ = ["LinodeOptions", "LinodeProvider", "orchestrate_register_providers"]
__version__ = "0.1.0"


@hookimpl
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    """Offer `LinodeProvider` as ``--provider linode``."""
    register(LinodeProvider())
