"""A busy local port: the next free one when the port came from the profile, a clear
one-line error (exit 2) when the user chose it with --port, and then before anything is
created, started or closed."""

from __future__ import annotations

import socket

import pytest

from tests.reliability.support import (
    db_rows,
    http_status,
    inserts,
    launch_args,
    notebook_answers,
)
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


def _one_line_usage_error(result: object, port: int) -> None:
    code, err = result.returncode, result.stderr  # type: ignore[attr-defined]
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrate: "), err
    assert f"port {port} is busy" in lines[0] and "--port" in lines[0], err


def test_busy_port_moves_on_or_fails_clearly(bed: Bed) -> None:
    busy = bed.local_port
    with socket.create_server(("127.0.0.1", busy)) as squatter:
        squatter.setblocking(False)

        # From the profile: the next free port, and the URL says which.
        launched = bed.cli(*launch_args())
        port, token = notebook_answers(launched.stdout)
        assert port > busy

        # Chosen with --port: refused before anything else happens.
        before = inserts(bed)
        _one_line_usage_error(bed.cli("launch", "nb2", "--profile", "e2e", "--detach",
                                      "--no-browser", "--port", str(busy), check=False), busy)
        assert inserts(bed) == before, "created despite the port"
        assert [r["name"] for r in db_rows(bed)] == ["nb"]

        for args in (["tunnel", "nb", "--port", str(busy)],
                     ["tunnel", "nb", "--detach", "--port", str(busy)],
                     ["start", "nb", "--detach", "--no-browser", "--port", str(busy)]):
            _one_line_usage_error(bed.cli(*args, check=False), busy)
            # The working tunnel was not closed to make room for one that cannot start.
            assert http_status(port, f"/api/status?token={token}") == 200, args

        # Nobody talked to the program that holds the port.
        with pytest.raises(BlockingIOError):
            squatter.accept()
