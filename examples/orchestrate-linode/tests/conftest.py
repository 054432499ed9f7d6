"""Fixtures: the fake Linode API on loopback, and a token in the environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_linode import TOKEN, FakeLinode, start_fake_linode


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinode]:
    monkeypatch.setenv("LINODE_TOKEN", TOKEN)
    server = start_fake_linode()
    try:
        yield server
    finally:
        server.stop()
