"""The `orchestrate_status_notes` hook: plugins add lines to a `status` row.

Autostop speaks through it (core knows nothing of the agent); a third-party plugin can too.
These rows are built in memory: the hook reads the row alone when no host is read.
"""

from __future__ import annotations

from typing import Any

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.flows.status import plugin_status_notes
from orchestrate.core.store.state import InstanceRow
from orchestrate.core.wiring.registry import build_manager
from orchestrate.core.wiring.runtime import Runtime

WITHOUT = "running without autostop (autostop = off): it bills until you stop it"


class Echo:
    """Repeats autostop's warning and adds its own line; records what it was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @hookimpl
    def orchestrate_status_notes(self, row: InstanceRow, session: Any) -> list[str]:
        self.seen.append((row.name, session))
        return [WITHOUT, f"echo: {row.name} is {row.status}"]


def row(status: str, autostop: str, **extra: Any) -> InstanceRow:
    return InstanceRow(
        name="nb", provider="gcp", status=status, profile={"values": {"autostop": autostop}},
        extra=dict(extra),
    )  # fmt: skip


def test_hook_status_notes_from_autostop_and_a_third_party_each_line_once() -> None:
    pm = build_manager()
    echo = Echo()
    pm.register(echo, name="echo")
    runtime = Runtime(pm=pm)
    notes = plugin_status_notes(runtime, row("running", "off"), live=False)
    assert notes.count(WITHOUT) == 1, notes
    assert "echo: nb is running" in notes
    assert echo.seen == [("nb", None)]  # no host read for a listing


def test_status_notes_from_autostop_follow_the_row() -> None:
    runtime = Runtime(pm=build_manager())
    assert plugin_status_notes(runtime, row("running", "60m"), live=False) == []
    stopped = row("stopped", "60m", stopped_by="autostop")
    assert plugin_status_notes(runtime, stopped, live=False) == [
        "stopped by autostop after 60 min idle"
    ]
    assert plugin_status_notes(runtime, row("stopped", "60m"), live=False) == []


def test_status_notes_without_the_autostop_plugin_are_empty(monkeypatch: Any) -> None:
    monkeypatch.setenv("ORCHESTRATE_DISABLE_PLUGINS", "host.autostop")
    runtime = Runtime(pm=build_manager())
    assert plugin_status_notes(runtime, row("running", "off"), live=False) == []
