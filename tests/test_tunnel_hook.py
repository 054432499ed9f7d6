"""The `orchestrate_open_tunnel` hook: a plugin's tunnel replaces core's forwarder.

Calls `background.open_tunnel`, the one place commands get their tunnel from, with real
pluggy managers; the plugins' tunnels are plain objects (no SSH is needed to see who
answered and with what).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.flows.background import open_tunnel
from orchestrate.core.wiring.registry import build_manager


@dataclass
class PluginTunnel:
    local_port: int
    seen: dict[str, Any]

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]:
        return {}


class CurrentPlugin:
    """Names every argument of the spec, `port_explicit` included."""

    @hookimpl
    def orchestrate_open_tunnel(
        self, session: Any, local_port: int, remote_host: str, remote_port: int,
        port_explicit: bool,
    ) -> PluginTunnel:  # fmt: skip
        return PluginTunnel(local_port, {
            "session": session, "remote_host": remote_host, "remote_port": remote_port,
            "port_explicit": port_explicit,
        })  # fmt: skip


class OlderPlugin:
    """Written before `port_explicit` existed: it must keep working."""

    @hookimpl
    def orchestrate_open_tunnel(
        self, session: Any, local_port: int, remote_host: str, remote_port: int
    ) -> PluginTunnel:
        return PluginTunnel(local_port, {"remote_port": remote_port})


@dataclass
class FakeRuntime:
    pm: Any


def test_hook_open_tunnel_a_plugin_wins_and_learns_whether_the_port_was_named() -> None:
    pm = build_manager(builtins=())
    pm.register(CurrentPlugin(), name="current")
    session = object()
    named = open_tunnel(FakeRuntime(pm), session, 9001, 8888, explicit=True)
    assert isinstance(named, PluginTunnel)
    assert named.local_port == 9001
    assert named.seen == {
        "session": session, "remote_host": "127.0.0.1", "remote_port": 8888,
        "port_explicit": True,
    }  # fmt: skip
    default = open_tunnel(FakeRuntime(pm), session, 8899, 8888, explicit=False)
    assert default.seen["port_explicit"] is False


def test_an_implementation_without_port_explicit_still_answers() -> None:
    pm = build_manager(builtins=())
    pm.register(OlderPlugin(), name="older")
    tunnel = open_tunnel(FakeRuntime(pm), object(), 8899, 8888, explicit=True)
    assert isinstance(tunnel, PluginTunnel)
    assert tunnel.seen == {"remote_port": 8888}
