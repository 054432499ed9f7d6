"""Shared fixtures. The test bed's fixtures live in tests/bed/ and load as pytest plugins."""

from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.bed.fixtures_gce",
    "tests.bed.fixtures_host",
    "tests.bed.fixtures_cluster",  # after fixtures_host, whose names it uses
    "tests.bed.fixtures_wan",
    "tests.support.gce_rows",
]


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C reaches the commands the tests start, even from a shell's background job.

    A non-interactive shell starts a background job with SIGINT ignored, and an ignored
    signal stays ignored across exec: every `orchestrate` a test starts would then shrug off
    the SIGINT that the Ctrl-C tests send. A handler of our own is reset to the default in a
    child, so installing Python's usual one here gives the children a normal Ctrl-C."""
    del config
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def orch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ORCHESTRATE_HOME and working directory, so no test sees the real user's."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("ORCHESTRATE_HOME", str(home))
    monkeypatch.delenv("ORCHESTRATE_DISABLE_PLUGINS", raising=False)
    # Commands that show the notebook URL open the browser: `true` takes the URL, so no
    # test opens a tab on the desktop of whoever runs the suite.
    monkeypatch.setenv("BROWSER", "true")
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def cli(orch_home: Path) -> Callable[..., CliResult]:
    """Run `orchestrate ARGS` in-process through `main()`, capturing both streams."""
    from orchestrate.core.app.cli import main

    def run(*args: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def write_profiles(orch_home: Path) -> Iterator[Callable[[str], Path]]:
    """Write ./orchestrate.toml in the test's working directory, trusted as the user's
    `orchestrate trust` would (the tests' profiles set endpoints and credentials)."""

    def write(text: str) -> Path:
        from orchestrate.core.store.trust import trust

        path = Path("orchestrate.toml").resolve()
        path.write_text(text, encoding="utf-8")
        trust(path)
        return path

    yield write
