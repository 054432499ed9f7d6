"""paramiko's own log records go to the instance's host log, never onto the terminal (they
used to print "Socket exception: ..." over the tunnel's live line); --debug shows them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from orchestrate.core.ssh import liblogs
from orchestrate.core.ssh.session import Session
from orchestrate.core.store.paths import host_log

pytestmark = pytest.mark.bed

LINE = "Socket exception: Connection reset by peer (104)"


@pytest.fixture
def fresh_routing(monkeypatch: pytest.MonkeyPatch, orch_home: Any) -> Iterator[Any]:
    logger = logging.getLogger("paramiko")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "propagate", True)
    monkeypatch.setattr(liblogs, "_routed", set())
    monkeypatch.setattr(liblogs, "SHOW", False)
    yield logger
    for handler in logger.handlers:  # the ones this test added; their stream is pytest's
        handler.close()


def connect(ssh_host: Any, name: str) -> Session:
    return Session.connect(
        ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_path,
        pinned_host_key=ssh_host.host_key, deadline_s=20, name=name,
    )  # fmt: skip


# capfd first: set up before the routing, so torn down after it (a transport thread may
# still log while the session ends).
def test_library_records_go_to_the_host_log_not_stderr(
    capfd: pytest.CaptureFixture[str], ssh_host: Any, fresh_routing: Any
) -> None:
    with connect(ssh_host, "nb"):
        logging.getLogger("paramiko.transport").error(LINE)
    assert LINE not in capfd.readouterr().err
    assert LINE in host_log("nb").read_text(encoding="utf-8")


def test_debug_shows_library_records_on_stderr_too(
    capfd: pytest.CaptureFixture[str], ssh_host: Any, fresh_routing: Any
) -> None:
    liblogs.SHOW = True
    with connect(ssh_host, "nb"):
        logging.getLogger("paramiko.transport").error(LINE)
    assert f"paramiko.transport: {LINE}" in capfd.readouterr().err
    assert LINE in host_log("nb").read_text(encoding="utf-8")
