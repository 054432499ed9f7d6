"""`down`: copy the notebooks home if asked, end the tunnel, delete the instance, forget it.

Works from any state a crash can leave: a row with no cloud id yet is looked up by name on
the provider (the create may have reached the cloud), so nothing keeps billing unseen.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import HostError, NotFound
from orchestrate.core.host.hostdocker import container_of, docker_on_host
from orchestrate.core.store.state import InstanceRow

Progress = Callable[[str], None]


def _remote_dir(profile_values: dict[str, Any]) -> str:
    """The notebooks folder as SFTP sees it: relative paths start in the login home."""
    folder = str(profile_values.get("notebooks_dir", "~/notebooks"))
    if folder == "~":
        return "."
    return folder[2:] if folder.startswith("~/") else folder


def sync_notebooks(session: Any, remote: str, local: Path, progress: Progress) -> int:
    """Copy the remote folder tree to `local` over SFTP; returns the number of files."""
    sftp = session.transport.open_sftp_client()
    count = 0
    try:
        stack = [(remote, local)]
        while stack:
            src, dst = stack.pop()
            dst.mkdir(parents=True, exist_ok=True)
            for entry in sftp.listdir_attr(src):
                source = f"{src}/{entry.filename}"
                target = dst / entry.filename
                if entry.st_mode is not None and stat.S_ISDIR(entry.st_mode):
                    stack.append((source, target))
                elif entry.st_mode is not None and stat.S_ISREG(entry.st_mode):
                    sftp.get(source, str(target))
                    count += 1
    except OSError as exc:
        raise HostError(
            f"copying notebooks from {remote} failed: {exc}",
            hint="nothing was deleted; run `down` again",
        ) from exc
    finally:
        sftp.close()
    progress(f"copied {count} file(s) from {remote} to {local}")
    return count


def down(runtime: Any, row: InstanceRow, *, sync_to: Path | None, progress: Progress) -> None:
    from orchestrate.core.cloud.instances import record_of
    from orchestrate.core.flows import background
    from orchestrate.core.flows.launch import make_plan
    from orchestrate.core.flows.rows import connect
    from orchestrate.core.ssh import sshconfig
    from orchestrate.core.ssh.keys import ensure_ssh_key
    from orchestrate.core.store.profiles import profile_from_snapshot

    state = runtime.state()
    provider = runtime.provider(row.provider)
    values = row.profile.get("values", {})
    container_only = getattr(provider, "stops_container_only", False)
    if sync_to is not None and row.status != "running" and not container_only:
        raise HostError(
            f"cannot copy notebooks from {row.name}: it is {row.status}",
            hint=f"run `orchestrate start {row.name}` first; nothing was deleted",
        )
    if (sync_to is not None or container_only) and row.address:
        session = connect(runtime, row.name, ensure_ssh_key(), progress)
        try:
            if sync_to is not None:
                sync_notebooks(session, _remote_dir(values), sync_to, progress)
            if container_only:
                session.run(docker_on_host(f"rm -f -- {container_of(row)}"))
        finally:
            session.close()
    if background.close_detached(row):
        progress("background tunnel closed")
    record = record_of(row)
    if record.cloud_id is None:
        plan = make_plan(runtime, row.name, profile_from_snapshot(row.profile), {}, token=None)
        found = provider.find(plan.spec)
        record = found if found is not None else record
    if record.cloud_id is not None:
        try:
            provider.destroy(record)
            state.event(row.name, "destroyed", f"{row.name} deleted on {provider.name}")
        except NotFound:
            progress(f"{row.name} was already gone on {provider.name}")
    state.delete(row.name)
    sshconfig.write(state.all(), ensure_ssh_key().private_path)
