"""The notebook as its user lives it: JupyterLab in a real browser, through the real tunnel.

`orchestrate launch --provider gcp` on the test bed (fake GCE API, real sshd, real Docker,
the bed's JupyterLab image), then headless Chromium opens the URL it printed, makes a
notebook, runs a cell and saves; the tunnel is killed, `orchestrate open` brings it back and
the page, reloaded, finds the kernel as it was. A kernel client over the websocket times
trivial executes through the tunnel (a figure for the report, not an assertion).

The browser is the only stand-in: `BROWSER` names a script that records the URLs orchestrate
asks to open (Python's webbrowser runs it as it would run Firefox), because no desktop
browser exists here, and the test drives its own Chromium instead.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import signal
import socket
import sqlite3
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import browser
from tests.support.e2e import Bed, gcp_bed
from tests.support.kernel_ws import KernelChannel, start_kernel

pytestmark = [pytest.mark.bed, pytest.mark.slow]

URL = re.compile(r"^http://localhost:(\d+)/\?token=([0-9a-zA-Z_-]+)$", re.M)
EXECUTES = 50


@pytest.fixture
def bed(
    orch_home: Path, gce_api, gce_credentials: Path, ssh_host, docker_engine, jupyter_image
) -> Iterator[Bed]:  # type: ignore[no-untyped-def]
    with gcp_bed(orch_home, gce_api, gce_credentials, ssh_host, jupyter_image) as made:
        yield made


@pytest.fixture
def opened(orch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`BROWSER` set to a script that appends each URL it is given to the returned file
    (after `orch_home`, which sets it to `true` for every other test)."""
    log = tmp_path / "browser-opened.txt"
    script = tmp_path / "record-browser"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{log}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(script))
    return log


def urls_opened(log: Path) -> list[str]:
    """The notebook URLs the browser was sent to. The browser is given a 0600 page that
    redirects (the token never on a command line): read the target from the page."""
    import json
    import re
    import stat
    from urllib.parse import unquote, urlsplit

    found = []
    for entry in log.read_text().splitlines() if log.exists() else []:
        assert entry.startswith("file://"), f"a token URL reached the command line: {entry}"
        page = Path(unquote(urlsplit(entry).path))
        assert stat.S_IMODE(page.stat().st_mode) == 0o600
        target = re.search(r"window\.location\.replace\((.*)\);", page.read_text())
        assert target, page.read_text()
        found.append(json.loads(target.group(1)))
    return found


def launch(bed: Bed) -> tuple[str, int, str]:
    out = bed.cli("launch", "nb", "--profile", "e2e", "--detach")
    found = URL.search(out.stdout)
    assert found, out.stdout + out.stderr
    return found.group(0), int(found.group(1)), found.group(2)


def wait_kernels_idle(port: int, token: str, timeout_s: float = 180.0) -> None:
    """Until Jupyter lists a kernel and every kernel is idle (state, polled)."""
    deadline = time.monotonic() + timeout_s
    states: list[str] = []
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", f"/api/kernels?token={token}")
            states = [k.get("execution_state", "") for k in json.loads(conn.getresponse().read())]
        finally:
            conn.close()
        if states and all(state == "idle" for state in states):
            return
        time.sleep(0.5)
    raise AssertionError(f"the notebook's kernel never became idle: {states}")


def notebook_names(port: int, token: str) -> set[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", f"/api/contents?token={token}")
        listing = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return {item["name"] for item in listing["content"] if item["type"] == "notebook"}


def tunnel_pid(name: str) -> int:
    from orchestrate.core.store.paths import state_db

    with sqlite3.connect(state_db()) as db:
        (pid,) = db.execute("SELECT tunnel_pid FROM instances WHERE name = ?", (name,)).fetchone()
    assert pid, "launch --detach recorded no background tunnel"
    return int(pid)


def wait_closed(port: int) -> None:
    """Until nothing listens on the port (the killed tunnel's socket is gone)."""
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)


def test_jupyterlab_in_chromium_survives_a_killed_tunnel(bed: Bed, opened: Path) -> None:
    reason = browser.available()
    if reason:
        pytest.fail(reason)
    url, port, token = launch(bed)
    assert urls_opened(opened) == [url]  # launch --detach opens the browser

    # status --json: the local URL without the token, and where the token is kept.
    info = json.loads(bed.cli("status", "nb", "--json").stdout)[0]
    assert info["url"] == f"http://localhost:{port}/"
    assert "state.db" in info["token_in"] and "orchestrate open nb" in info["token_in"]
    assert token not in json.dumps(info)

    before = notebook_names(port, token)
    with browser.chromium() as driver:
        driver.get(f"http://localhost:{port}/lab?token={token}")
        browser.new_notebook(driver)
        # The notebook's kernel answers before a cell is run: under load it starts slowly.
        wait_kernels_idle(port, token)
        browser.run_in_last_cell(driver, "print(6*7)")
        browser.wait_for_output(driver, "42")
        browser.run_in_last_cell(driver, "kept = 'set before the tunnel died'")
        browser.save(driver)

        # The bed's notebooks folder is shared with other tests running beside this one:
        # theirs have their own names, the browser's is JupyterLab's "Untitled".
        made = {n for n in notebook_names(port, token) - before if n.startswith("Untitled")}
        assert len(made) == 1, made
        on_host = Path(f"~{bed.ssh.user}").expanduser() / "notebooks" / made.pop()
        try:
            assert "print(6*7)" in on_host.read_text()
            # Jupyter ran as the login user's uid (NB_UID), so the file is the user's.
            assert on_host.stat().st_uid == pwd.getpwnam(bed.ssh.user).pw_uid

            os.kill(tunnel_pid("nb"), signal.SIGKILL)
            wait_closed(port)
            reopened = bed.cli("open", "nb")
            assert reopened.stdout.strip() == url
            assert "starting one in the background" in reopened.stderr
            assert urls_opened(opened) == [url, url]

            driver.refresh()
            browser.wait_for(
                driver,
                lambda drv: drv.find_elements("css selector", browser.CELL_EDITORS),
                "the notebook again after the reload",
            )
            browser.run_in_last_cell(driver, "print(kept)")
            browser.wait_for_output(driver, "set before the tunnel died")
        finally:
            on_host.unlink(missing_ok=True)

    # A live tunnel is reused as it is: same URL, nothing started.
    again = bed.cli("open", "nb", "--no-browser")
    assert again.stdout.strip() == url and "starting" not in again.stderr


def test_every_command_that_shows_the_url_opens_the_browser(
    bed: Bed, opened: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _, _ = launch(bed)
    bed.cli("stop", "nb")
    started = bed.cli("start", "nb", "--detach")
    assert started.stdout.strip() == url
    tunnel = bed.cli("tunnel", "nb", "--detach")
    assert tunnel.stdout.strip() == url
    assert urls_opened(opened) == [url, url, url]
    bed.cli("tunnel", "nb", "--no-browser", "--detach")
    assert len(urls_opened(opened)) == 3

    # No browser at all (a server, a container): the URL, and a line saying so.
    failing = opened.parent / "no-browser"
    failing.write_text("#!/bin/sh\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("BROWSER", str(failing))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    shown = bed.cli("open", "nb")
    assert shown.stdout.strip() == url
    assert "no browser could be opened" in shown.stderr


def test_kernel_executes_over_the_websocket(
    bed: Bed, record_property: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """50 trivial executes through the tunnel; the median goes to the report, not an assert."""
    _, port, token = launch(bed)
    channel = KernelChannel(port, token, start_kernel(port, token))
    try:
        seconds = [channel.execute(f"{i} + 1") for i in range(EXECUTES)]
    finally:
        channel.close()
    assert len(seconds) == EXECUTES
    median_ms = statistics.median(seconds) * 1000
    record_property("kernel_execute_median_ms", round(median_ms, 2))
    with capsys.disabled():
        print(f"\nkernel execute through the tunnel: median {median_ms:.1f} ms over {EXECUTES}")
