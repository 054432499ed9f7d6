"""The current folder's orchestrate.toml cannot send the user's credentials elsewhere.

The attack: the user's own config names their credentials (a refresh token); a cloned
repository's ./orchestrate.toml sets `api_endpoint` to a server of the attacker's. Here that
server is a loopback listener that records every byte it receives: it must receive nothing
until the user trusts the file, and then it does (so the test can see a redirect at all).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.optionchecks import endpoint

from tests.conftest import CliResult

Cli = Callable[..., CliResult]


class Listener:
    """A TCP listener on 127.0.0.1 that keeps what each connection sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                except OSError:
                    pass
                self.received.append(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    made = Listener()
    yield made
    made.close()


USER_CONFIG = """
[profiles.work]
provider = "gcp"
autostop = "off"

[profiles.work.gcp]
project = "orch-test-1"
credentials = "{credentials}"
zones = ["us-east1-d"]
accelerator = "none"
"""
FOLDER_FILE = """
[profiles.work.gcp]
api_endpoint = "http://127.0.0.1:{port}"
"""


@pytest.fixture
def attacked(orch_home: Path, gce_adc_credentials: Path, listener: Listener) -> Path:
    """The user's config names their credentials; the folder's file redirects the API."""
    config = orch_home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config.toml").write_text(USER_CONFIG.format(credentials=gce_adc_credentials))
    folder = Path("orchestrate.toml").resolve()
    folder.write_text(FOLDER_FILE.format(port=listener.port))
    return folder


def launch_in_child(home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "ORCHESTRATE_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrate.core.app.cli", "launch", "nb", "--profile", "work",
         "--yes", "--no-browser"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_folder_file_cannot_redirect_the_api_until_trusted(
    cli: Cli, attacked: Path, listener: Listener, orch_home: Path
) -> None:
    for command in (["launch", "nb", "--profile", "work", "--yes", "--no-browser"],
                    ["launch", "--dry-run", "nb", "--profile", "work"]):  # fmt: skip
        result = cli(*command)
        assert result.code == 2, result
        (line,) = result.err.splitlines()
        assert "api_endpoint" in line and "orchestrate.toml:3" in line, line
        assert "orchestrate trust" in line
    time.sleep(0.5)
    assert listener.received == [], "nothing reached the foreign endpoint"

    # The user trusts the file: now the redirect is theirs, and the listener sees it.
    assert cli("trust").code == 0
    child = launch_in_child(orch_home)
    try:
        deadline = time.monotonic() + 60
        while not listener.received and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child.kill()
        child.communicate()
    assert listener.received, "a trusted file's endpoint is used (the listener can see it)"
    assert any(b" HTTP/1." in data for data in listener.received), listener.received

    # Any change to the file needs a new trust.
    attacked.write_text(attacked.read_text() + "\n# edited\n")
    assert cli("launch", "--dry-run", "nb", "--profile", "work").code == 2


def test_config_flag_and_user_config_need_no_trust(
    cli: Cli, attacked: Path, listener: Listener
) -> None:
    result = cli("--config", str(attacked), "launch", "--dry-run", "nb", "--profile", "work")
    assert result.code == 0, result.err
    assert listener.received == []


def test_trust_refuses_what_is_not_a_profile_file(cli: Cli, tmp_path: Path) -> None:
    result = cli("trust", "/dev/zero")
    assert result.code == 2 and "not a regular file" in result.err, result


@pytest.mark.parametrize(
    "url", ["http://evil.example.com", "http://10.0.0.1:80", "http://user@127.0.0.1:1",
            "https://x/path", "ftp://127.0.0.1"],
)  # fmt: skip
def test_endpoints_are_https_except_on_loopback(url: str) -> None:
    with pytest.raises(ProfileError):
        endpoint(url, "where")


@pytest.mark.parametrize(
    "url", ["https://compute.googleapis.com", "http://127.0.0.1:8080", "http://localhost:9",
            "http://[::1]:9"],
)  # fmt: skip
def test_https_and_loopback_endpoints_pass(url: str) -> None:
    assert endpoint(url, "where") == url
