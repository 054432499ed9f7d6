"""What every command needs, built once per process and only when first asked for.

Commands reach it through `typer.Context.obj`. Providers, profiles and the state database
are loaded on first use so `orchestrate --help` pays for none of them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from orchestrate.core.api.provider import Provider
    from orchestrate.core.store.profiles import Profile
    from orchestrate.core.store.state import State


@dataclass
class Runtime:
    pm: pluggy.PluginManager
    debug: bool = False
    config: Path | None = None
    _providers: dict[str, Provider] | None = field(default=None, repr=False)
    _state: State | None = field(default=None, repr=False)

    def providers(self) -> dict[str, Provider]:
        if self._providers is None:
            from orchestrate.core.wiring.registry import providers

            self._providers = providers(self.pm)
        return self._providers

    def provider(self, name: str | None) -> Provider:
        from orchestrate.core.wiring.registry import pick_provider

        return pick_provider(self.providers(), name)

    def profile(self, name: str | None, overrides: dict[str, Any] | None = None) -> Profile:
        from orchestrate.core.store.profiles import load_profile

        return load_profile(
            name,
            config=self.config,
            provider_names=sorted(self.providers()),
            overrides=overrides,
        )

    def state(self) -> State:
        if self._state is None:
            from orchestrate.core.store.state import open_state

            self._state = open_state()
        return self._state

    def close(self) -> None:
        if self._state is not None:
            self._state.close()
            self._state = None


def echo(text: str = "", *, err: bool = False) -> None:
    """Plain print: no rich, so output is cheap and pipes cleanly."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n")
    stream.flush()


def echo_json(data: Any) -> None:
    echo(json.dumps(data, indent=2, sort_keys=True, default=str))
