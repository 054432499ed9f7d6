"""orchestrate-linode: Linode GPU instances; the entry point ``linode`` names this module."""

from collections.abc import Callable

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import Provider

from orchestrate_linode.provider import LinodeOptions, LinodeProvider

__all__ = ["LinodeOptions", "LinodeProvider"]


@hookimpl
def orchestrate_register_providers(register: Callable[[Provider], None]) -> None:
    register(LinodeProvider())
