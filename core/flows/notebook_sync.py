"""Copying the notebooks folder home before `down`: everything the host can read as root.

The container writes as whatever user its image runs as (root, for some images; Jupyter's
own `.Trash-0`), so an SFTP copy as the login user stopped at the first root-owned file with
"Permission denied". The folder is streamed as a tar archive made by root on the host
(`sudo -n`), unpacked here with every member checked, Jupyter's trash folders left out.
A file the host cannot read does not stop the copy: the others arrive, the failure names
the paths, and `down` deletes nothing unless the copy was whole.
"""

from __future__ import annotations

import re
import shlex
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from orchestrate.core.api.errors import HostError

Progress = Callable[[str], None]

#: Jupyter's trash folders (`.Trash-<uid>`): what the user deleted in the notebook UI.
SKIPPED = (".Trash-*",)

_TAR_ERROR = re.compile(r"^tar: (\./)?(?P<path>.+?): (?P<why>.+)$")


def remote_dir(folder: str) -> str:
    """The notebooks folder as a path the login shell resolves (relative to its home)."""
    if folder in ("~", "~/"):
        return "."
    return folder[2:] if folder.startswith("~/") else folder


def archive_command(folder: str) -> str:
    """The exec request: tar as root (sudo -n for a login user) of `folder`, on stdout."""
    excludes = " ".join(f"--exclude={shlex.quote(pattern)}" for pattern in SKIPPED)
    tar = f"tar -C {shlex.quote(folder)} {excludes} -cf - ."
    root = shlex.quote(f"if [ \"$(id -u)\" -eq 0 ]; then exec {tar}; else exec sudo -n {tar}; fi")
    return f"sh -c {root}"


def sync_notebooks(session: Any, folder: str, local: Path, progress: Progress) -> int:
    """Copy the remote `folder` tree into `local`; returns the number of files copied."""
    remote = remote_dir(folder)
    channel = session.transport.open_session()
    errors: list[str] = []
    count = 0
    try:
        channel.exec_command(archive_command(remote))
        with channel.makefile("rb") as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                count += _unpack(tar, member, local)
        errors = _stderr_lines(channel)
        status = channel.recv_exit_status()
    except (OSError, tarfile.TarError, EOFError) as exc:
        said = " ".join(_stderr_lines(channel)[-1:]).strip()  # e.g. sudo wants a password
        raise HostError(
            f"copying notebooks from {folder} failed: {said or exc}",
            hint="nothing was deleted; run `down` again",
        ) from exc
    finally:
        channel.close()
    if status != 0:
        failed = [m.group("path") for m in map(_TAR_ERROR.match, errors) if m]
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        raise HostError(
            f"copied {count} file(s) from {folder} to {local}, but not "
            + (shown or f"everything ({(errors or ['tar exit status ' + str(status)])[-1]})"),
            hint="nothing was deleted; fix or remove those on the host, then run `down` again",
        )
    progress(f"copied {count} file(s) from {folder} to {local}")
    return count


def _stderr_lines(channel: Any) -> list[str]:
    """What the host's tar (or sudo) said on stderr; nothing when it cannot be read."""
    try:
        raw: bytes = channel.makefile_stderr("rb").read()
    except OSError:
        return []
    return raw.decode("utf-8", "replace").splitlines()


def _unpack(tar: tarfile.TarFile, member: tarfile.TarInfo, local: Path) -> int:
    """Write one member under `local`; 1 for a file. Only plain files and folders, only
    below `local`: a link or a device on the host is not followed or made here."""
    parts = PurePosixPath(member.name).parts
    if not parts or parts[0] in ("/", "..") or ".." in parts:
        return 0
    target = local.joinpath(*[p for p in parts if p != "."])
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return 0
    if not member.isfile():
        return 0
    source = tar.extractfile(member)
    if source is None:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with source, open(target, "wb") as out:
        while chunk := source.read(1 << 20):
            out.write(chunk)
    return 1
