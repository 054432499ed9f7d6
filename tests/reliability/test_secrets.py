"""Secrets: the whole workflow with --debug leaks no key, no credential and no token.

Every command of the seed workflow runs with --debug (the most talkative mode). Then
everything orchestrate wrote or said is searched: each command's output, every file under
ORCHESTRATE_HOME (state database and its WAL, event log, host and tunnel logs, ssh config),
the working folder, every request the fake cloud received and the background tunnel's
command line and environment. None may hold the SSH private key, the service account's
private key or key id, or an OAuth access token (the fake issues "ya29.fake-..."). The
Jupyter token may appear only in the URL lines shown to the user and in files only the user
can read (0600, in 0700 folders); the event log and the logs never hold it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from tests.reliability.support import URL, db_rows, launch_args, tunnel_processes
from tests.support.e2e import Bed

pytestmark = [pytest.mark.bed, pytest.mark.slow]


def _pem_lines(pem: str) -> list[str]:
    """The base64 body lines of a PEM/OpenSSH private key: any one of them is a leak."""
    return [line for line in pem.splitlines() if line and "-----" not in line and len(line) > 20]


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def test_debug_run_leaks_nothing(bed: Bed, gce_credentials: Path, tmp_path: Path) -> None:
    outputs: list[tuple[str, str, str]] = []

    def run(*args: str) -> str:
        result = bed.cli("--debug", *args)
        outputs.append((" ".join(args), result.stdout, result.stderr))
        return result.stdout

    run("launch", "nb", "--profile", "e2e", "--dry-run")
    found = URL.search(run(*launch_args()))
    assert found
    token = found.group(2)
    run("status")
    run("status", "nb", "--json")
    run("logs", "nb")
    run("ssh-config")
    run("tunnel", "nb", "--close")
    run("tunnel", "nb", "--detach")
    run("stop", "nb")
    run("start", "nb", "--detach", "--no-browser")
    [tunnel] = tunnel_processes(bed)
    process = [
        Path(f"/proc/{tunnel}/cmdline").read_bytes().decode(errors="replace"),
        Path(f"/proc/{tunnel}/environ").read_bytes().decode(errors="replace"),
    ]
    events = json.dumps(db_rows(bed, "events"))
    # While the instance exists its row holds the token, in the 0600 database (or its WAL).
    database = [
        p for p in (bed.home / "state").glob("state.db*") if token.encode() in p.read_bytes()
    ]
    assert database and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in database)
    run("down", "nb", "--yes", "--sync-notebooks", str(tmp_path / "synced"))

    ssh_key = (bed.home / "config" / "id_ed25519").read_text()
    account = json.loads(gce_credentials.read_text())
    forbidden = {
        **{f"ssh private key line {i}": line for i, line in enumerate(_pem_lines(ssh_key))},
        **{
            f"service account key line {i}": line
            for i, line in enumerate(_pem_lines(account["private_key"]))
        },
        "service account key id": account["private_key_id"],
    }
    access_token = re.compile(r"ya29\.[\w-]+")

    def clean(where: str, text: str, *, token_allowed: bool = False) -> None:
        for what, secret in forbidden.items():
            assert secret not in text, f"{what} in {where}"
        assert "PRIVATE KEY" not in text, f"a private key marker in {where}"
        assert not access_token.search(text), f"an access token in {where}"
        if not token_allowed:
            assert token not in text, f"the Jupyter token in {where}"

    # Output: the token only in URL lines, which are the whole line.
    for command, stdout, stderr in outputs:
        clean(f"stderr of {command}", stderr)
        other_lines = "\n".join(line for line in stdout.splitlines() if not URL.fullmatch(line))
        clean(f"stdout of {command}", other_lines)
    assert any(token in stdout for _, stdout, _ in outputs), "the URL was shown"
    dry_run = outputs[0][1]
    assert "JUPYTER_TOKEN=[redacted]" in dry_run and str(gce_credentials) in dry_run

    clean("the event log", events)
    for i, text in enumerate(process):
        clean(f"the background tunnel's {('command line', 'environment')[i]}", text)
    for request in bed.gce.requests:
        clean(f"the API request {request.method} {request.path}", json.dumps(request.body))

    # Files: no key but the key file itself; the token only in private files.
    key_file = bed.home / "config" / "id_ed25519"
    logs = bed.home / "state" / "logs"
    assert any(logs.iterdir()), "the host and tunnel logs exist"
    holders: set[Path] = set()
    for path in _files(bed.home, bed.work, tmp_path / "synced"):
        text = path.read_bytes().decode("utf-8", errors="replace")
        if path == key_file:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            continue
        clean(str(path), text, token_allowed=path.parent != logs)
        if token in text:
            holders.add(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} holds the token"
            for folder in path.relative_to(bed.home).parents:
                mode = stat.S_IMODE((bed.home / folder).stat().st_mode)
                assert folder == Path(".") or mode == 0o700, f"{folder} is {mode:o}"
    # Besides the state, the page the browser is sent to (as Jupyter's own): it holds the
    # token so that no command line does, 0600 in the private folder (checked above).
    pages = {p for p in holders if p.parent == bed.home / "state" / "browser"}
    assert all(p.name.startswith("open-") for p in pages), pages
    assert {p.name for p in holders - pages} <= {"state.db", "state.db-wal"}, holders
    assert os.environ.get("LIBCLOUD_DEBUG") is None
