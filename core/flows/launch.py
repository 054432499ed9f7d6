"""`launch` and `start`: the whole seed workflow, converging on every run.

Order matters for "nothing is lost": the state row is written before the first cloud call,
the cloud id right after create, the host key at first contact, the tunnel's pid when it
starts. A crash anywhere leaves a row that `status` shows and `down` can clean, and the next
`launch` picks up from what exists.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shlex
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import (
    CreateRefused,
    HostError,
    Interrupted,
    OrchestrateError,
    UsageError,
)
from orchestrate.core.api.hoststeps import StepContext
from orchestrate.core.flows.crashpoints import crash_point
from orchestrate.core.flows.rows import connect, shared_session
from orchestrate.core.host.hostdocker import docker_on_host
from orchestrate.core.ssh.keys import SshKey, ensure_ssh_key
from orchestrate.core.store.profiles import Profile, profile_snapshot
from orchestrate.core.store.state import InstanceRow, State
from orchestrate.core.wiring.runtime import Runtime

Progress = Callable[[str], None]

#: How many times one host setup reconnects after its SSH connection dropped mid-stage.
SETUP_RECONNECTS = 3


@dataclass
class LaunchPlan:
    """Everything decided before any network call: provider, options, spec, host context."""

    name: str
    profile: Profile
    provider: p.Provider
    options: Any
    spec: p.LaunchSpec
    context: StepContext
    key: SshKey


def make_plan(
    runtime: Runtime,
    name: str,
    profile: Profile,
    provider_overrides: Mapping[str, Any],
    *,
    token: str | None,
) -> LaunchPlan:
    """Validate everything and build the spec and host context; no network, no state."""
    provider = runtime.provider(profile.provider)
    options = provider.validate_options(profile.provider_table(), profile.table_where())
    options = provider.apply_overrides(options, provider_overrides)
    key = ensure_ssh_key()
    gpu = provider.gpu_request(options)
    ssh_user = provider.ssh_user(options)
    context = StepContext(
        instance=name,
        gpu=gpu,
        notebook_image=profile.image,
        token=token or secrets.token_hex(24),
        notebook_container=profile.container_name,
        notebooks_host_dir=profile.notebooks_dir,
        notebooks_container_dir=profile.container_notebooks_dir,
        remote_port=profile.remote_port,
        # "off" goes through as is: the autostop step then removes an agent left installed.
        autostop=profile.autostop,
    )
    spec = p.LaunchSpec(
        name=name,
        provider=provider.name,
        options=options,
        ssh_user=ssh_user,
        ssh_public_key=key.public_line,
        gpu=gpu,
        labels={"orchestrate": "1", "orchestrate-name": name},
    )
    if profile.bootstrap == "startup-script":
        from orchestrate.core.host.bootstrap import startup_script

        spec = dataclasses.replace(spec, startup_script=startup_script(runtime.pm.hook, context))
    return LaunchPlan(name, profile, provider, options, spec, context, key)


def dry_run_text(runtime: Runtime, plan: LaunchPlan) -> str:
    """The API requests and the host script a launch would send. Never a secret: the token
    is replaced, credentials are paths, the SSH key is the public half."""
    from orchestrate.core.host.runner import dry_run_text as host_text

    lines = [f"# launch {plan.name} on {plan.provider.name} (dry run: nothing is sent)"]
    options = plan.provider.redacted_options(plan.options)
    if options:
        lines.append("# provider options: " + json.dumps(dict(options), sort_keys=True))
    for request in plan.provider.plan(plan.spec):
        lines.append(f"{request.method} {request.path}")
        if request.body is not None:
            lines.append(json.dumps(dict(request.body), indent=2, sort_keys=True))
    redacted = dataclasses.replace(plan.context, token="<token>")
    lines.append("")
    lines.append(host_text(runtime.pm.hook, redacted, steps=planned_steps(runtime, redacted)))
    return "\n".join(lines)


def planned_steps(runtime: Runtime, context: StepContext) -> list[Any]:
    """The host steps the plugins contribute for `context`; refused without an autostop
    step while autostop is on."""
    from orchestrate.core.api.hoststeps import collect_steps, require_autostop

    steps = collect_steps(runtime.pm.hook, context)
    require_autostop(steps, context)
    return steps


def url_for(port: int, token: str) -> str:
    return f"http://localhost:{port}/?token={token}"


def existing_token(row: InstanceRow | None) -> str | None:
    return row.token if row is not None and row.token else None


def setup_host(
    runtime: Runtime,
    session: Any,
    context: StepContext,
    progress: Progress,
    on_armed: Callable[[], None] | None = None,
    facts: Any = None,
) -> Any:
    """Probe the host and apply the needed steps; returns the runner's `SetupReport`.

    `on_armed` hears when the autostop step has finished on the host: from then on, a
    failure later in the setup leaves a host that stops itself. `facts`: the probe's,
    when the background tunnel process ran it on its connection (`probe_request`).
    """
    from orchestrate.core.api.hoststeps import AUTOSTOP_STEP
    from orchestrate.core.host.runner import ProgressEvent, Runner
    from orchestrate.core.store.paths import host_log

    def on_event(event: ProgressEvent) -> None:
        if event.kind == "step-start":
            crash_point("in-host-step")
        if event.kind == "step-done" and event.step == AUTOSTOP_STEP and on_armed is not None:
            on_armed()
        if event.kind == "output":
            if runtime.debug:
                progress(f"    {event.message}")
            return
        if event.kind in (
            "step-start",
            "step-done",
            "step-fail",
            "warning",
            "reboot",
            "wait-ssh",
            "plan",
        ):
            elapsed = f" ({event.elapsed_s:.0f}s)" if event.elapsed_s is not None else ""
            progress(f"  {event.message}{elapsed}")

    def on_wait(attempt: int, elapsed: float, reason: str) -> None:
        if attempt == 1:
            progress(f"  waiting for SSH ({reason})")

    steps = planned_steps(runtime, context)
    drops = 0
    while True:
        runner = Runner(
            session,
            context,
            steps,
            log_path=host_log(context.instance),
            hook=runtime.pm.hook,
            on_event=on_event,
        )
        try:
            report = runner.run(facts)
            break
        except HostError:
            # A step that failed on a live connection is a real failure; a connection that
            # died under the stage is not the host's fault. Steps are idempotent, so a new
            # connection, a new probe and the stage again (what was cut runs again).
            if session.active or drops >= SETUP_RECONNECTS:
                raise
            drops += 1
            facts = None  # from before the drop: the new connection probes again
            progress("  the SSH connection dropped during host setup; reconnecting")
            runtime.state().event(
                context.instance, "reconnect", "SSH connection lost during host setup"
            )
            session.reconnect(on_wait=on_wait)
    runtime.state().event(context.instance, "setup", report.summary())
    runtime.state().update(context.instance, setup_hash=setup_hash(steps, context, report.facts))
    progress(report.summary())
    return report


def setup_hash(steps: Any, context: StepContext, facts: Any) -> str:
    """A digest of the setup the host now has: every step's script for these facts, with
    the token out. It changes when a plugin, a profile value or orchestrate's scripts do,
    so the state row tells which recipe a host was set up with."""
    import hashlib

    redacted = dataclasses.replace(context, token="")
    digest = hashlib.sha256()
    for step in steps:
        digest.update(f"{step.name}\0{step.script(redacted, facts)}\0".encode())
    return digest.hexdigest()[:16]


def record_intent(state: State, plan: LaunchPlan) -> InstanceRow:
    """Write the launch's row before its first cloud call; return it.

    Besides the profile and the login user it holds the notebook token and, for a row that
    has none yet, what the instance costs an hour: `status` prices rows from that without
    loading any provider plugin, also for a launch that died right after the create call.
    An existing row keeps its price, as a relaunch reuses the instance the row describes,
    and takes this launch's profile.
    """
    from orchestrate.core.cloud.instances import OPTIONS_KEY
    from orchestrate.core.money.costs import price_extra

    name = plan.name
    row = state.record_intent(
        name, plan.provider.name, profile_snapshot(plan.profile), ssh_user=plan.spec.ssh_user
    )
    fields: dict[str, Any] = {}
    snapshot = profile_snapshot(plan.profile)
    if row.profile != snapshot:
        # A relaunch with a changed profile: start, status and the detached tunnel read the
        # row, so it must say what this launch sets the host up with (a new remote_port).
        fields["profile"] = snapshot
    if row.token != plan.context.token:
        fields["token"] = plan.context.token
    extra = dict(row.extra)
    if "price_per_hour" not in extra:
        extra.update(price_extra(plan.provider, plan.options))
    # What `get`, `start`, `stop` and `destroy` receive later (`InstanceRecord.options`).
    extra[OPTIONS_KEY] = dict(plan.provider.redacted_options(plan.options))
    if extra != row.extra:
        fields["extra"] = extra
    if not fields:
        return row
    state.update(name, **fields)
    written = state.get(name)
    assert written is not None
    return written


def refuse_a_move(row: InstanceRow, plan: LaunchPlan) -> None:
    """A relaunch that names another machine for an existing instance (``--host`` with the
    ssh provider) is refused: it would silently keep using the old one."""
    wanted = plan.provider.redacted_options(plan.options).get("host")
    had = row.extra.get("host")
    if row.provider == plan.provider.name and wanted and had and wanted != had:
        raise UsageError(
            f"{row.name} is on {had}, not {wanted}",
            hint=f"`orchestrate down {row.name}` first to move it there, or launch it under "
            "another name",
        )


def forget_if_never_sent(state: Any, name: str, error: BaseException | None = None) -> None:
    """Drop the intent row of a launch that failed before its first create call.

    Refused credentials, an exhausted quota or a bad zone stop a launch in preflight: nothing
    can exist on the cloud, and the row would only be a ghost that `status` lists and `down`
    cannot clear while the cloud refuses the credentials. Once a create was tried (a "try"
    event) the row stays, since the cloud may have the instance, unless the cloud refused the
    create request itself (`CreateRefused`: a bad field, a missing role), which proves it has
    none.
    """
    row = state.get(name)
    if row is None or row.cloud_id:
        return
    tried = [e for e in state.events(name) if e.ts >= row.created_at and e.kind == "try"]
    if not tried or isinstance(error, CreateRefused):
        state.delete(name)


@dataclass
class Outcome:
    name: str
    url: str
    local_port: int
    token: str
    setup_summary: str
    #: the live background tunnel was kept: nothing runs in the foreground
    kept_tunnel: bool = False
    #: the local port forwarded to Ray's dashboard on a cluster's head (None elsewhere)
    dashboard_port: int | None = None


def bring_up(
    runtime: Runtime,
    plan: LaunchPlan,
    *,
    port: int,
    port_explicit: bool,
    detach: bool,
    progress: Progress,
    foreground: Callable[[Any, str], None] | None = None,
) -> Outcome:
    """Create or reuse the instance, set the host up, start Jupyter and the tunnel.

    With `detach`, the tunnel runs in a background process and this returns once Jupyter
    answers through it; otherwise `foreground(tunnel, url)` runs until Ctrl-C.
    """
    from orchestrate.core.cloud.instances import ensure_running
    from orchestrate.core.flows.still_running import still_running_note

    state = runtime.state()
    name = plan.name
    existing = state.get(name)
    fresh = existing is None
    if existing is not None:
        refuse_a_move(existing, plan)
    record_intent(state, plan)
    crash_point("after-intent")
    try:
        record = ensure_running(
            state,
            plan.provider,
            plan.spec,
            progress,
            after_create=lambda: crash_point("after-create-call"),
        )
    except BaseException as exc:
        if fresh:
            forget_if_never_sent(state, name, exc)
        # The cloud may have made the instance before the wait for it failed.
        note = still_running_note(state, name, armed=False)
        if note and isinstance(exc, OrchestrateError):
            exc.notes.append(note)
        elif note and isinstance(exc, KeyboardInterrupt):
            raise Interrupted("interrupted", hint=note) from exc
        raise
    row = state.get(name)
    if row is not None and "stopped_by" in row.extra:
        # Running again: whoever stopped it last no longer explains anything.
        state.update(name, extra={k: v for k, v in row.extra.items() if k != "stopped_by"})
    crash_point("after-create")
    # A host set up before has its agent armed (when autostop is on); a new one has it once
    # the autostop step, the first of the setup, has finished.
    armed = [bool(row is not None and row.setup_hash)]
    try:
        return bring_up_host(
            runtime, plan, row, record, port=port, port_explicit=port_explicit, detach=detach,
            progress=progress, foreground=foreground, on_armed=lambda: armed.append(True),
        )  # fmt: skip
    except OrchestrateError as exc:
        note = still_running_note(state, name, armed=any(armed))
        if note:
            exc.notes.append(note)
        raise
    except KeyboardInterrupt as exc:
        note = still_running_note(state, name, armed=any(armed))
        raise Interrupted("interrupted", hint=note) from exc


def _keeps_tunnel(hello: Mapping[str, Any], plan: LaunchPlan, port: int, explicit: bool) -> bool:
    """Whether the live background tunnel already is the one this launch would open: to the
    same notebook port, and on the local port asked for when one was named. Keeping it
    saves the new tunnel's connect and the old one's close, and keeps the user's open tabs.
    """
    if hello.get("remote_port") != plan.context.remote_port:
        return False
    return not explicit or hello.get("local_port") == port


def bring_up_host(
    runtime: Runtime,
    plan: LaunchPlan,
    row: InstanceRow | None,
    record: p.InstanceRecord,
    *,
    port: int,
    port_explicit: bool,
    detach: bool,
    progress: Progress,
    foreground: Callable[[Any, str], None] | None,
    on_armed: Callable[[], None],
    before_setup: Callable[[Any], None] | None = None,
) -> Outcome:
    """`bring_up` once the instance runs: SSH, host setup, Jupyter and the tunnel.

    `before_setup(session)` runs on the host's connection before the host steps (a
    cluster's head gets the cluster's secret there). A cluster's head also gets a second
    forward, to Ray's dashboard."""
    from orchestrate.core.flows import background
    from orchestrate.core.host import jupyter
    from orchestrate.core.ssh import sshconfig

    state = runtime.state()
    name = plan.name
    if not record.address:
        raise OrchestrateError(
            f"{name} has no external address on {plan.provider.name}",
            hint="check the network settings of the profile",
        )
    early: background.DetachedStart | None = None
    shared = shared_session(runtime, name, plan.key) if plan.spec.startup_script is None else None
    keep = shared is not None and _keeps_tunnel(shared.hello, plan, port, port_explicit)
    if not keep:
        # The tunnel is about to be replaced, and an in-process one needs a transport of
        # its own: this launch connects directly.
        shared = None
    if (
        detach
        and not keep
        and row is not None
        and row.setup_hash
        and row.host_key
        and plan.spec.startup_script is None
    ):
        # A host set up before, its key pinned and its address current (a relaunch, a
        # start): the background tunnel's process starts now and makes the launch's one
        # SSH login, runs the probe first and lends its connection for the rest, instead
        # of a second login here (an encrypted session cannot be handed over). A first
        # launch waits, as its set-up may reboot the host under the tunnel. A cluster's
        # head gets the cluster's secret before its probe: it connects itself.
        from orchestrate.core.host.probe import probe_request

        background.close_detached(row)
        request = None
        if before_setup is None:
            request = probe_request(plan.context, planned_steps(runtime, plan.context))
        early = background.DetachedStart(name, port, explicit=port_explicit, probe=request)
    session = shared
    probed = None  # the facts the background process's probe found
    early_port = None
    try:
        if early is not None and early.asked_probe:
            from orchestrate.core.host.probe import facts_from_result

            probed = facts_from_result(early.probed(progress))
            early_port = early.wait()
            # Its connection, through its control socket; a direct one only where the
            # state dir cannot hold the socket.
            session = shared_session(runtime, name, plan.key)
        if session is None:
            session = connect(runtime, name, plan.key, progress)
        # After connect: the address is current and the host key pinned, so a plain
        # `ssh NAME` through the included config checks the same key orchestrate does.
        sshconfig.write(state.all(), plan.key.private_path)
        crash_point("after-host-key")
        if plan.spec.startup_script is not None:
            from orchestrate.core.host.bootstrap import wait_done

            session = wait_done(session, progress)
        if before_setup is not None:
            before_setup(session)
        report = setup_host(
            runtime, session, plan.context, progress, on_armed=on_armed, facts=probed
        )
        crash_point("after-setup")

        def read_logs() -> str:
            container = shlex.quote(plan.context.notebook_container)
            out = session.run(docker_on_host(f"logs --tail 200 -- {container} 2>&1"))
            return str(out.stdout)

        row = state.get(name)
        assert row is not None
        if keep:
            assert shared is not None
            opened = background.NotebookTunnel(int(shared.hello["local_port"]), None)
        elif early is not None:
            bound = early_port if early_port is not None else early.wait()
            opened, early = background.NotebookTunnel(bound, None), None
        else:
            opened = background.open_notebook_tunnel(
                runtime,
                row,
                session,
                port,
                plan.context.remote_port,
                explicit=port_explicit,
                detach=detach,
            )
        local_port, tunnel = opened.local_port, opened.tunnel
        if detach:
            crash_point("tunnel-started")
        with ExitStack() as held:
            if tunnel is not None and foreground is not None:
                # From here `status` shows this process's tunnel, until it closes.
                held.enter_context(background.held_in_foreground(state, name, local_port))
            elif not detach:
                state.update(name, local_port=local_port)
            if report.nothing_to_do and report.facts.jupyter_status == 200:
                # The probe, the setup's last word on the host, had Jupyter answer our token
                # on the port the tunnel forwards to: a check through the tunnel would cost
                # a channel and a request more to learn the same. What it would add, the
                # tunnel's own forward, is the one every earlier launch of this host used.
                token = plan.context.token
                ready = f"jupyter answered the probe on the host; tunnel on port {local_port}"
            else:
                token = jupyter.wait_ready(
                    local_port, plan.context.token, read_logs=read_logs, progress=progress
                )
                ready = f"jupyter answers through the tunnel on port {local_port}"
            if token != plan.context.token:
                state.update(name, token=token)
            url = url_for(local_port, token)
            state.event(name, "ready", ready)
            outcome = Outcome(name, url, local_port, token, report.summary(), kept_tunnel=keep)
            cluster = plan.context.cluster
            if cluster is not None and cluster.is_head:
                if tunnel is not None:
                    dashboard = background.open_dashboard(runtime, session, name, cluster)
                    held.callback(dashboard.close)
                    outcome.dashboard_port = dashboard.local_port
                    # Said now: the foreground holds the terminal until Ctrl-C.
                    progress(f"dashboard: http://localhost:{dashboard.local_port}")
                else:
                    outcome.dashboard_port = background.detached_dashboard_port(state.get(name))
            if tunnel is not None and foreground is not None:
                foreground(tunnel, url)
            elif tunnel is not None:
                tunnel.close()
        return outcome
    except BaseException:
        if early is not None:
            early.cancel()  # started for a launch that failed before using it
        raise
    finally:
        if session is not None:
            session.close()
