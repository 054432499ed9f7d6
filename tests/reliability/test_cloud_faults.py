"""Cloud faults: 5xx and timeouts are retried with backoff until a deadline; an auth failure
is one line that says how to fix it, and leaves nothing behind.

The status refreshes go through libcloud's real driver over real HTTP. For the timeouts a
small proxy in front of the fake holds chosen requests without answering; the deadline and
the HTTP timeout are shortened in-process (the product's are 60 s each) so the test takes
seconds, with the same code paths.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.conftest import CliResult
from tests.reliability.support import db_rows, in_process_plan, inserts, launch_args
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


def _instance(bed: Bed, name: str = "nb") -> None:
    """A running instance and its row, made by the product's own code (no host setup)."""
    from orchestrate.core.cloud.instances import ensure_running
    from orchestrate.core.flows.launch import record_intent

    runtime, plan = in_process_plan(bed, name)
    try:
        state = runtime.state()
        record_intent(state, plan)
        ensure_running(state, plan.provider, plan.spec, lambda message: None)
    finally:
        runtime.close()


def _refresh_failed(info: dict[str, Any]) -> list[str]:
    return [n for n in info["notes"] if n.startswith("could not refresh")]


def _refreshes(bed: Bed) -> int:
    return len([r for r in bed.gce.calls("GET", "/instances/nb") if r.path.endswith("/nb")])


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every backoff the GCP provider waits, in order: its injectable sleep, recorded (and
    still slept, so the deadline, which runs on the real clock, is reached as in use)."""
    from orchestrate.plugins.providers.gcp.provider import GcpProvider

    waited: list[float] = []

    def sleep(seconds: float) -> None:
        waited.append(seconds)
        time.sleep(seconds)

    defaults = dict(GcpProvider.__init__.__kwdefaults__ or {})
    monkeypatch.setattr(GcpProvider.__init__, "__kwdefaults__", {**defaults, "sleep": sleep})
    return waited


def test_server_errors_are_retried_with_backoff(
    bed: Bed, cli: Callable[..., CliResult], waits: list[float]
) -> None:
    _instance(bed)
    before = _refreshes(bed)
    bed.gce.faults.server_errors = 3
    bed.gce.faults.server_error_path = "/instances/nb"
    shown = json.loads(cli("status", "nb", "--json").out)
    assert shown[0]["status"] == "running" and not _refresh_failed(shown[0]), shown
    assert _refreshes(bed) - before == 4, "three 503s, then the answer"
    assert bed.gce.faults.server_errors == 0
    assert waits == [0.25, 0.5, 1.0], "retries back off (0.25 s doubling)"


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch, waits: list[float]) -> None:
    """The product's 60 s retry deadline and HTTP timeout, shortened for the test."""
    from orchestrate.plugins.providers.gcp import driver
    from orchestrate.plugins.providers.gcp.provider import GcpProvider

    defaults = dict(GcpProvider.__init__.__kwdefaults__ or {})  # with `waits`' sleep
    monkeypatch.setattr(
        GcpProvider.__init__, "__kwdefaults__", {**defaults, "retry_deadline_s": 4.0}
    )
    monkeypatch.setattr(driver, "HTTP_TIMEOUT_S", 1)


def _one_line(result: CliResult) -> str:
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orchestrate: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


@pytest.mark.usefixtures("short_deadlines")
def test_persistent_server_errors_end_at_the_deadline(
    bed: Bed, cli: Callable[..., CliResult], waits: list[float]
) -> None:
    _instance(bed)
    before = _refreshes(bed)
    bed.gce.faults.server_errors = 10**6
    bed.gce.faults.server_error_path = "/instances/nb"
    result = cli("status", "nb", "--json")
    # status keeps listing: the failure is a note on the row, not a crash of the listing.
    assert result.code == 0, result.err
    failed = _refresh_failed(json.loads(result.out)[0])
    assert len(failed) == 1 and "503" in failed[0], failed
    # A backoff (0.25 s doubling) that stopped rather than wait past the 4 s deadline: the
    # waits fit in it, and one try more than waits was made.
    assert len(waits) >= 3 and waits == [0.25 * 2**i for i in range(len(waits))], waits
    assert sum(waits) <= 4.0 < sum(waits) + 0.25 * 2 ** len(waits), waits
    tries = _refreshes(bed) - before
    assert tries == len(waits) + 1, (tries, waits)

    # A command that needs the answer fails with one line once the deadline passed.
    result = cli("stop", "nb")
    assert result.code == 1
    assert "503" in _one_line(result) or "unavailable" in _one_line(result).lower()


class _StallingProxy:
    """An HTTP proxy to the fake that holds the next `stall` requests whose path contains
    `match` for `hold_s` seconds and then hangs up without answering (a timeout)."""

    def __init__(self, upstream: str, match: str, stall: int, hold_s: float) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.match, self.stall, self.hold_s = match, stall, hold_s
        self.stalled = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    hold = proxy.match in self.path and proxy.stall > 0
                    if hold:
                        proxy.stall -= 1
                        proxy.stalled += 1
                if hold:
                    time.sleep(proxy.hold_s)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body or None, headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _relay

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _StallingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling(bed: Bed) -> Iterator[_StallingProxy]:
    with _StallingProxy(bed.gce.endpoint, "/instances/nb", stall=2, hold_s=2.5) as proxy:
        yield proxy


@pytest.mark.usefixtures("short_deadlines")
def test_timeouts_are_retried(
    bed: Bed, cli: Callable[..., CliResult], stalling: _StallingProxy, waits: list[float]
) -> None:
    _instance(bed)
    # The row keeps the endpoint it was created with: send it through the proxy from now on.
    import sqlite3

    db = sqlite3.connect(bed.home / "state" / "state.db")
    try:
        extra = json.loads(db.execute("SELECT extra_json FROM instances").fetchone()[0])
        extra["api_endpoint"] = stalling.url
        db.execute("UPDATE instances SET extra_json = ?", (json.dumps(extra),))
        db.commit()
    finally:
        db.close()
    result = cli("status", "nb", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)[0]
    assert info["status"] == "running" and not _refresh_failed(info), info
    assert stalling.stalled == 2, "two requests timed out and were sent again"
    assert waits == [0.25, 0.5], "each after a backoff"
    # Cleaned up while the proxy still runs: the row now sends every call through it.
    assert cli("down", "nb", "--yes").code == 0


def test_auth_failure_is_one_line_with_the_fix(bed: Bed) -> None:
    bed.gce.faults.auth_failure = True
    result = bed.cli(*launch_args(), check=False)
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("orchestrate: gcp credentials ") and "refused" in line, result.stderr
    assert "gcloud" in line and "Traceback" not in result.stderr, line
    assert inserts(bed) == 0 and bed.gce.instances == {}
    # Nothing reached the cloud, so nothing is left to clean up.
    assert db_rows(bed) == [], db_rows(bed)
    bed.gce.faults.auth_failure = False
    assert json.loads(bed.cli("status", "--json").stdout) == []
