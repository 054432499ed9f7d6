"""`stop` and `down`: the two ways billing ends, from any state a launch can leave.

`stop` ends the tunnel and powers the machine off (or, on a host that is not orchestrate's,
removes only orchestrate's containers there). `down` copies the notebooks home if asked, ends the
tunnel, deletes the instance and forgets it; a row with no cloud id yet is looked up by name
on the provider (the create may have reached the cloud), so nothing keeps billing unseen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrate.core.api.errors import HostError, HostKeyMismatch, NotFound
from orchestrate.core.flows.notebook_sync import sync_notebooks
from orchestrate.core.host.hostdocker import remove_ours
from orchestrate.core.store.state import InstanceRow

Progress = Callable[[str], None]


def stop(runtime: Any, row: InstanceRow, *, progress: Progress) -> bool:
    """Stop `row`'s compute billing; its disk and notebooks stay. False: the launch never
    reached the cloud, so there is nothing to stop (`down` forgets such a row)."""
    from orchestrate.core.cloud.instances import record_of
    from orchestrate.core.flows.background import close_detached

    provider = runtime.provider(row.provider)
    close_detached(row)
    state = runtime.state()
    state.update(row.name, tunnel_pid=None)
    if row.cloud_id is None and row.status == "creating":
        return False
    if provider.stops_container_only:
        # The machine is the user's own (an existing host): only orchestrate's containers
        # go (the notebooks stay in the host folder; `start` makes the container again).
        from orchestrate.core.flows.rows import connect
        from orchestrate.core.ssh.keys import ensure_ssh_key

        session = connect(runtime, row.name, ensure_ssh_key(), progress)
        try:
            result = session.run(remove_ours(row))
        finally:
            session.close()
        if result.rc != 0:
            raise HostError(f"removing the notebook container failed: {result.stderr.strip()}")
    else:
        # "stopping" first: a `status` refreshing meanwhile sees the cloud stop and must
        # know the user asked for it (not autostop), and that its own answer is stale.
        state.update(row.name, status="stopping")
        provider.stop(record_of(row, provider))
    state.update(row.name, status="stopped", started_at=None)
    state.event(row.name, "stopped", f"{row.name} stopped by the user")
    return True


#: How long `down` waits for a host it must reach (to copy notebooks, or to remove the
#: container on a machine that is not orchestrate's): a gone host fails in this, not minutes.
DOWN_SSH_DEADLINE_S = 20.0


def down(
    runtime: Any,
    row: InstanceRow,
    *,
    sync_to: Path | None,
    progress: Progress,
    force: bool = False,
) -> None:
    """Delete `row`'s instance and forget it. With `force`, a host that cannot be reached
    to remove the notebook container is forgotten anyway (said in a warning)."""
    from orchestrate.core.api.errors import OrchestrateError
    from orchestrate.core.cloud.instances import record_of, with_options
    from orchestrate.core.flows import background
    from orchestrate.core.flows.launch import make_plan
    from orchestrate.core.flows.rows import connect
    from orchestrate.core.ssh import sshconfig
    from orchestrate.core.ssh.keys import ensure_ssh_key

    state = runtime.state()
    provider = runtime.provider(row.provider)
    launched = row.launched_profile()
    container_only = provider.stops_container_only
    if sync_to is not None and row.status != "running" and not container_only:
        raise HostError(
            f"cannot copy notebooks from {row.name}: it is {row.status}",
            hint=f"run `orchestrate start {row.name}` first; nothing was deleted",
        )
    if (sync_to is not None or container_only) and row.address:
        try:
            session = connect(
                runtime, row.name, ensure_ssh_key(), progress, deadline_s=DOWN_SSH_DEADLINE_S
            )
        except HostKeyMismatch:
            raise  # another machine answers: never forgotten silently, --force or not
        except OrchestrateError as exc:
            if not (force and sync_to is None):
                exc.notes.append(
                    f"nothing was deleted; `orchestrate down {row.name} --force` forgets it "
                    "without reaching the host" + (" (and without the copy)" if sync_to else "")
                )
                raise
            progress(
                f"warning: {row.address} does not answer ({exc.message}); forgetting "
                f"{row.name} without removing its notebook container there"
            )
        else:
            try:
                if sync_to is not None:
                    sync_notebooks(session, launched.notebooks_dir, sync_to, progress)
                if container_only:
                    session.run(remove_ours(row))
            finally:
                session.close()
    if background.close_detached(row):
        progress("background tunnel closed")
    record = record_of(row, provider)
    if record.cloud_id is None:
        plan = make_plan(runtime, row.name, launched, {}, token=None)
        found = provider.find(plan.spec)
        record = with_options(found, record.options) if found is not None else record
    if record.cloud_id is not None:
        try:
            provider.destroy(record)
            state.event(row.name, "destroyed", f"{row.name} deleted on {provider.name}")
        except NotFound:
            progress(f"{row.name} was already gone on {provider.name}")
    state.delete(row.name)
    sshconfig.write(state.all(), ensure_ssh_key().private_path)
