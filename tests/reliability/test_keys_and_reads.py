"""The user's SSH key, the notebook URL and credentials files: never overwritten, never on a
command line, never read when they need not be, never read when they are not files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import webbrowser
from collections.abc import Callable
from pathlib import Path

import pytest
from orchestrate.core.api.errors import AuthError, OrchestrateError
from orchestrate.core.flows.browser import open_browser, redirect_file
from orchestrate.core.ssh.keys import ensure_ssh_key, key_path
from orchestrate.plugins.providers.aws import credentials as aws_credentials
from orchestrate.plugins.providers.gcp import credentials as gcp_credentials

from tests.conftest import CliResult

Cli = Callable[..., CliResult]


# -- the SSH key -------------------------------------------------------------------------


def test_a_missing_pub_is_derived_and_the_private_key_is_kept(orch_home: Path) -> None:
    first = ensure_ssh_key()
    private_bytes = first.private_path.read_bytes()
    Path(str(first.private_path) + ".pub").unlink()
    again = ensure_ssh_key()
    assert again.private_path.read_bytes() == private_bytes, "the private key is never replaced"
    assert again.public_line.split()[:2] == first.public_line.split()[:2]
    assert Path(str(first.private_path) + ".pub").read_text().strip() == again.public_line


@pytest.mark.parametrize("with_pub", [True, False])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_key_others_can_read_is_refused_in_every_branch(
    orch_home: Path, with_pub: bool, mode: int
) -> None:
    made = ensure_ssh_key()
    if not with_pub:
        Path(str(made.private_path) + ".pub").unlink()
    os.chmod(made.private_path, mode)
    before = made.private_path.read_bytes()
    with pytest.raises(OrchestrateError, match="readable by others"):
        ensure_ssh_key()
    assert made.private_path.read_bytes() == before
    assert Path(str(made.private_path) + ".pub").exists() == with_pub


def test_a_new_key_is_owner_only(orch_home: Path) -> None:
    made = ensure_ssh_key()
    assert made.private_path == key_path()
    assert stat.S_IMODE(made.private_path.stat().st_mode) == 0o600


def test_an_unreadable_key_is_not_replaced(orch_home: Path) -> None:
    made = ensure_ssh_key()
    Path(str(made.private_path) + ".pub").unlink()
    made.private_path.write_bytes(b"not a key")
    with pytest.raises(OrchestrateError, match="never overwrites"):
        ensure_ssh_key()
    assert made.private_path.read_bytes() == b"not a key"


# -- the browser ------------------------------------------------------------------------


def test_the_token_url_goes_through_a_private_file_never_a_command_line(
    orch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No browser exists on a CI machine: webbrowser.open is replaced by a recorder of the
    # argument a browser process would get on its command line.
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: opened.append(url) or True)
    url = "http://localhost:8899/?token=secret-token-abc"
    assert open_browser(url)
    (argument,) = opened
    assert "secret-token-abc" not in argument and argument.startswith("file://")
    page = redirect_file(url)
    assert argument == page.as_uri()
    assert stat.S_IMODE(page.stat().st_mode) == 0o600
    assert stat.S_IMODE(page.parent.stat().st_mode) == 0o700
    assert url in page.read_text(), "the page sends the browser on to the notebook"


# -- credentials files --------------------------------------------------------------------


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (2 << 20))
    return {"device": Path("/dev/zero"), "fifo": fifo, "folder": tmp_path, "big": big}


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "big"])
def test_credentials_that_are_not_small_regular_files_are_refused(
    odd_files: dict[str, Path], kind: str
) -> None:
    path = str(odd_files[kind])
    with pytest.raises(AuthError) as gcp:
        gcp_credentials.load_credentials(path)
    with pytest.raises(AuthError) as aws:
        aws_credentials.load_credentials(path)
    for caught in (gcp, aws):
        assert len(caught.value.line().splitlines()) == 1
        assert "cannot be read" in caught.value.line()


def test_dry_run_opens_no_credentials_file(tmp_path: Path, orch_home: Path) -> None:
    """A FIFO as credentials: any open for reading would block (a plain open) or be
    refused (ours); strace-free proof that --dry-run never opens it is the child finishing
    with the plan while the FIFO has no writer, and the audit hook seeing no open of it."""
    fifo = tmp_path / "creds.fifo"
    os.mkfifo(fifo)
    (tmp_path / "work").mkdir(exist_ok=True)
    profile = tmp_path / "p.toml"
    profile.write_text(
        '[profiles.p]\nprovider = "gcp"\n[profiles.p.gcp]\n'
        f'credentials = "{fifo}"\nzones = ["us-east1-d"]\naccelerator = "none"\n'
    )
    code = (
        "import sys\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(str(a[0])) if e == 'open' else None)\n"
        "from orchestrate.core.app.cli import main\n"
        f"rc = main(['--config', {str(profile)!r}, 'launch', '--dry-run', 'nb', '-p', 'p'])\n"
        f"opened = [s for s in seen if {fifo.name!r} in s]\n"
        "print('OPENED', opened, file=sys.stderr)\n"
        "sys.exit(rc or (3 if opened else 0))\n"
    )
    env = {**os.environ, "ORCHESTRATE_HOME": str(orch_home)}
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "OPENED []" in proc.stderr
    assert str(fifo) in proc.stdout, "the plan shows the path, never the content"
