"""`down --sync-notebooks` copies what the host can read as root, leaves Jupyter's trash
out, and names what it could not copy (it used to abort on the first root-owned file)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from orchestrate.core.api.errors import HostError
from orchestrate.core.flows.notebook_sync import sync_notebooks
from orchestrate.core.ssh.session import Session

pytestmark = pytest.mark.bed


@pytest.fixture
def session(ssh_host: Any) -> Iterator[Session]:
    with Session.connect(
        ssh_host.address, ssh_host.port, ssh_host.user, ssh_host.key_path,
        pinned_host_key=ssh_host.host_key, deadline_s=20,
    ) as opened:  # fmt: skip
        yield opened


@pytest.fixture
def notebooks(ssh_host: Any) -> Iterator[Path]:
    """A notebooks folder in the login user's home, as a container running as root leaves
    it: a root-owned notebook only root can read, root's trash, a nested folder."""
    home = Path(f"~{ssh_host.user}").expanduser()
    folder = home / f"nb-sync-{uuid.uuid4().hex[:8]}"
    (folder / "deep").mkdir(parents=True)
    (folder / "mine.ipynb").write_text('{"cells": []}')
    (folder / "deep" / "data.csv").write_text("a,b\n1,2\n")
    (folder / "by-root.ipynb").write_text('{"root": true}')
    (folder / "by-root.ipynb").chmod(0o600)  # owned by root (this test runs as root)
    (folder / ".Trash-0" / "files").mkdir(parents=True)
    (folder / ".Trash-0" / "files" / "old.ipynb").write_text("{}")
    subprocess.run(["chown", "-R", f"{ssh_host.user}:", str(folder / "mine.ipynb"),
                    str(folder / "deep")], check=True)  # fmt: skip
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=True)


def test_root_owned_files_are_copied_and_trash_is_left_out(
    session: Session, notebooks: Path, tmp_path: Path
) -> None:
    progress: list[str] = []
    count = sync_notebooks(session, f"~/{notebooks.name}", tmp_path / "home", progress.append)
    assert count == 3
    got = tmp_path / "home"
    assert (got / "by-root.ipynb").read_text() == '{"root": true}'
    assert (got / "mine.ipynb").read_text() == '{"cells": []}'
    assert (got / "deep" / "data.csv").read_text() == "a,b\n1,2\n"
    assert not (got / ".Trash-0").exists()
    assert progress == [f"copied 3 file(s) from ~/{notebooks.name} to {got}"]


def test_a_missing_folder_is_one_error_that_says_nothing_was_deleted(
    session: Session, tmp_path: Path
) -> None:
    with pytest.raises(HostError) as caught:
        sync_notebooks(session, "~/no-such-folder-here", tmp_path / "home", print)
    line = caught.value.line()
    assert "no-such-folder-here" in line and "nothing was deleted" in line
