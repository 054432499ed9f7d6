"""`JsonApi` and `token_from` (orchestrate.core.api.httpapi) against a small JSON server on
loopback: real HTTP through the standard library, as a provider without an SDK sends it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api.errors import AuthError, NotFound, ProviderError
from orchestrate.core.api.httpapi import HttpRefused, JsonApi, reason_of, token_from
from orchestrate.core.api.retry import Retry

HINT = "make a token at https://example.invalid/tokens"


class Server:
    """Answers from a queue of (status, document); logs (method, path, body, auth)."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any]] = []
        self.seen: list[tuple[str, str, Any, str | None]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                owner.seen.append((self.command, self.path, body, self.headers["Authorization"]))
                status, document = owner.answers.pop(0) if owner.answers else (200, {})
                data = document if isinstance(document, bytes) else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.http.server_port}/v1"


@pytest.fixture
def server() -> Iterator[Server]:
    made = Server()
    yield made
    made.http.shutdown()
    made.http.server_close()


def api_for(server: Server) -> JsonApi:
    no_wait = Retry(deadline_s=5.0, first_s=0.01, max_s=0.01, sleep=lambda s: None)
    return JsonApi("mycloud", server.endpoint, {"Authorization": "Bearer t0k"}, HINT, no_wait)


def test_a_request_sends_json_and_retries_throttling(server: Server) -> None:
    server.answers = [(429, {"message": "slow down"}), (503, b"busy"), (200, {"id": 7})]
    answer = api_for(server).call("POST", "/instances", {"name": "nb"}, context="creating nb")
    assert answer == {"id": 7}
    assert [s[:3] for s in server.seen] == [("POST", "/v1/instances", {"name": "nb"})] * 3
    assert server.seen[0][3] == "Bearer t0k"


@pytest.mark.parametrize(
    ("status", "document", "error", "line"),
    [
        (401, {"errors": [{"reason": "Invalid Token"}]}, AuthError,
         f"mycloud refused the token while reading nb: Invalid Token ({HINT})"),
        (404, {"error": "nope"}, NotFound, "mycloud: not found while reading nb"),
        (400, {"error": {"message": "bad region"}}, HttpRefused,
         "mycloud refused reading nb (HTTP 400): bad region"),
    ],
)  # fmt: skip
def test_refusals_are_typed(
    server: Server, status: int, document: Any, error: type[Exception], line: str
) -> None:
    server.answers = [(status, document)]
    with pytest.raises(error) as caught:
        api_for(server).call("GET", "/instances/1", context="reading nb")
    assert caught.value.line() == line  # type: ignore[attr-defined]
    if isinstance(caught.value, HttpRefused):
        assert caught.value.status == 400 and caught.value.document == document


def test_an_unreachable_endpoint_is_a_provider_error(server: Server) -> None:
    api = api_for(server)
    server.http.shutdown()
    server.http.server_close()
    with pytest.raises(ProviderError, match="mycloud API unreachable while listing"):
        api.call("GET", "/instances", context="listing")


def test_reason_of_reads_the_common_shapes() -> None:
    assert reason_of({"errors": [{"reason": "r", "field": "f"}]}) == "r"
    assert reason_of({"error": {"message": "m"}}) == "m"
    assert reason_of({"detail": "d"}) == "d" and reason_of({"other": 1}) == ""


def test_token_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MYCLOUD_TOKEN", raising=False)
    with pytest.raises(AuthError, match=r"mycloud: no API token \(MYCLOUD_TOKEN is unset\)"):
        token_from(None, ["MYCLOUD_TOKEN"], "mycloud", HINT)
    monkeypatch.setenv("MYCLOUD_TOKEN", " from-env \n")
    assert token_from(None, ["MYCLOUD_TOKEN"], "mycloud", HINT) == "from-env"
    path = tmp_path / "token"
    path.write_text("from-file\n", encoding="utf-8")
    assert token_from(str(path), ["MYCLOUD_TOKEN"], "mycloud", HINT) == "from-file"
    path.write_text("", encoding="utf-8")
    with pytest.raises(AuthError, match="is empty"):
        token_from(str(path), ["MYCLOUD_TOKEN"], "mycloud", HINT)
    with pytest.raises(AuthError, match="cannot be read"):
        token_from(str(tmp_path / "missing"), ["MYCLOUD_TOKEN"], "mycloud", HINT)
