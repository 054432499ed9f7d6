"""The Amazon EC2 provider (``--provider aws``, ``[profiles.NAME.aws]``), registered through
the provider hook.

Importing this package loads no libcloud: the driver is built on the first API call.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider
from orchestrate.plugins.providers.aws.options import AwsOptions
from orchestrate.plugins.providers.aws.provider import AwsProvider

__all__ = ["AwsOptions", "AwsProvider", "orchestrate_register_providers"]


@hookimpl
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    """Offer `AwsProvider` as ``--provider aws``."""
    register(AwsProvider())
