"""`launch NAME --nodes N`: a head and N-1 workers, as converging and as crash-safe as one
instance.

Order, and why:
1. every node's row is written (cluster, node index) before any cloud call, so `status`
   shows and `down` cleans a cluster that a crash cut short;
2. the price of the whole cluster was shown and confirmed by the command before this;
3. the provider's cluster network rule, once (`ClusterNetworks`);
4. the nodes that exist are read back; the missing ones are created in parallel: all in
   one zone for a new cluster (failover moves the whole cluster), in the cluster's zone
   when it only lost some;
5. the cluster's secret (one per cluster, a 0600 file in the state folder) goes to each
   node over SSH stdin before its host steps;
6. host steps on every node in parallel, each with its `ClusterContext`; the head then gets
   the notebook tunnel, with a second forward to Ray's dashboard.

Worker threads use a `Runtime` of their own: the state database connection and the
provider objects (their SDK connections) belong to the thread that opened them.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrate.core.api import provider as p
from orchestrate.core.api.errors import HostError, OrchestrateError, UsageError
from orchestrate.core.api.hoststeps import ClusterContext
from orchestrate.core.flows.crashpoints import crash_point
from orchestrate.core.flows.launch import LaunchPlan, Outcome, make_plan, record_intent
from orchestrate.core.store.profiles import Profile
from orchestrate.core.store.state import InstanceRow, State
from orchestrate.core.wiring.runtime import Runtime

Progress = Callable[[str], None]

#: The cluster's network tag and rule are named `orchestrate-cluster-<name>`; GCE allows
#: 63 characters for both, lowercase letters, digits and dashes, a letter first.
RULE_PREFIX = "orchestrate-cluster-"
_CLUSTER_NAME = re.compile(r"[a-z](?:[-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63 - len(RULE_PREFIX)


def node_name(cluster: str, index: int) -> str:
    """Node 0 (the head) is the cluster's own name; workers are NAME-w1, NAME-w2 ..."""
    return cluster if index == 0 else f"{cluster}-w{index}"


def check_cluster_name(name: str, nodes: int) -> None:
    """A cluster's name must make a valid network tag (`orchestrate-cluster-<name>`)."""
    if len(name) <= MAX_NAME and _CLUSTER_NAME.fullmatch(name):
        return
    raise UsageError(
        f"cluster name {name!r} cannot name its network rule {RULE_PREFIX}{name} (nodes = {nodes})",
        hint=f"use lowercase letters, digits and dashes, a letter first, at most {MAX_NAME} "
        "characters",
    )


def require_clusters(provider: p.Provider, nodes: int, where: str) -> None:
    """A provider without `ClusterNetworks` cannot make clusters: said before anything."""
    if not isinstance(provider, p.ClusterNetworks):
        raise UsageError(
            f"provider {provider.name} cannot make clusters (nodes = {nodes} in {where})",
            hint="use nodes = 1, or a provider that makes clusters (gcp, aws, ssh)",
        )


def nodes_where(profile: Profile, flag: bool) -> str:
    """Where the node count came from, for the one-line refusal."""
    return "--nodes" if flag else (profile.where("nodes").rstrip(": ") or "the profile")


def token_path(cluster: str) -> Path:
    from orchestrate.core.store.paths import private_dir, state_dir

    return private_dir(state_dir() / "clusters") / f"{cluster}.token"


def cluster_token(cluster: str) -> str:
    """The cluster's secret: made once, kept in a 0600 file (never in the state database),
    read again by every later launch, start and scale of the cluster."""
    from orchestrate.core.store.paths import write_private

    path = token_path(cluster)
    if path.exists():
        text: str = path.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{64}", text):
            return text
    token = secrets.token_hex(32)
    write_private(path, token + "\n")
    return token


def forget_token(cluster: str) -> None:
    path = token_path(cluster)
    if path.exists():
        path.unlink()


def write_token(session: Any, context: ClusterContext, token: str) -> None:
    """The secret to `context.token_file` (dir 0700, file 0600, root's) over stdin: never
    on a command line, in metadata or in a log."""
    import posixpath
    import shlex

    folder = shlex.quote(posixpath.dirname(context.token_file))
    target = shlex.quote(context.token_file)
    command = (
        'if [ "$(id -u)" = 0 ]; then s=; else s="sudo -n"; fi; '
        f"$s install -d -m 700 {folder} && $s sh -c 'umask 077; cat > \"$1\"' sh {target}"
    )
    result = session.run(command, stdin=token + "\n")
    if result.rc != 0:
        raise HostError(
            f"writing the cluster secret to {context.token_file} on {session.name} failed: "
            f"{str(result.stderr).strip()[-200:]}",
            hint="the login user needs root or passwordless sudo",
        )


def node_plans(
    runtime: Runtime,
    name: str,
    profile: Profile,
    overrides: Mapping[str, Any],
    *,
    token: str | None,
    nodes: int,
) -> list[LaunchPlan]:
    """One plan per node, the same spec but for the name; no network, no state."""
    head = make_plan(runtime, name, profile, overrides, token=token)
    plans = []
    for index in range(nodes):
        plan = (
            head
            if index == 0
            else make_plan(
                runtime, node_name(name, index), profile, overrides, token=head.context.token
            )
        )
        labels = {**plan.spec.labels, p.CLUSTER_LABEL: name}
        plan.spec = dataclasses.replace(plan.spec, cluster=name, labels=labels)
        plans.append(plan)
    return plans


def _thread_runtime(runtime: Runtime) -> Runtime:
    """A runtime for one worker thread: its own state connection and provider objects."""
    return Runtime(pm=runtime.pm, debug=runtime.debug, config=runtime.config)


def in_threads(
    runtime: Runtime, items: Sequence[Any], work: Callable[[Runtime, Any], Any]
) -> list[Any]:
    """`work(thread_runtime, item)` for each item in parallel; results or exceptions."""
    from orchestrate.core.cloud.cluster import in_parallel

    def run(item: Any) -> Any:
        mine = _thread_runtime(runtime)
        try:
            return work(mine, item)
        finally:
            mine.close()

    return in_parallel(list(items), run)


def raise_first(results: Sequence[Any], names: Sequence[str]) -> None:
    """The first node's error, naming the node, with the others as notes."""
    paired = zip(names, results, strict=True)
    failed = [(n, r) for n, r in paired if isinstance(r, BaseException)]
    if not failed:
        return
    name, error = failed[0]
    if isinstance(error, OrchestrateError):
        if name not in error.message:
            error.message = f"{name}: {error.message}"
        for other, more in failed[1:]:
            line = more.line() if isinstance(more, OrchestrateError) else repr(more)
            error.notes.append(f"{other}: {line}")
    raise error


def _state_in_thread() -> State:
    from orchestrate.core.store.state import open_state

    return open_state()


def ensure_nodes(runtime: Runtime, plans: list[LaunchPlan], progress: Progress) -> None:
    """Every node exists and runs, its record stored: the ones that exist are read back
    (started when stopped), the missing ones created in parallel."""
    from orchestrate.core.cloud.cluster import create_cluster, create_in_zone, lookup
    from orchestrate.core.cloud.instances import ensure_running, record_of, store, with_options

    state = runtime.state()
    head = plans[0]
    provider_name = head.provider.name

    def provider_for() -> p.Provider:
        return _thread_runtime(runtime).provider(provider_name)

    rows = [state.get(plan.name) for plan in plans]

    def read(rt: Runtime, index: int) -> Any:
        row, plan = rows[index], plans[index]
        provider = rt.provider(provider_name)
        record = record_of(row, provider) if row is not None and row.cloud_id else None
        if record is not None:
            record = with_options(record, plan.spec.options)
        return lookup(provider, record, plan.spec)

    found = in_threads(runtime, range(len(plans)), read)
    raise_first(found, [plan.name for plan in plans])
    missing = [plan for plan, record in zip(plans, found, strict=True) if record is None]
    for plan, record, row in zip(plans, found, rows, strict=True):
        if record is None:
            continue
        if row is not None and not row.cloud_id:
            progress(f"found {plan.name} on {provider_name} from an earlier try")
        store(state, record)

    def on_created(record: p.InstanceRecord) -> None:
        crash_point("after-create-call")
        with _state_in_thread() as mine:
            store(mine, record, started_at=time.time(), host_key=None, setup_hash=None)
            mine.event(record.name, "created", f"created in {record.zone}")

    def on_removed(record: p.InstanceRecord) -> None:
        with _state_in_thread() as mine:
            mine.update(
                record.name, cloud_id=None, status="creating", address=None, zone=None,
                host_key=None, setup_hash=None, started_at=None,
            )  # fmt: skip
            mine.event(record.name, "removed", f"deleted in {record.zone}: the cluster moves")

    def on_event(kind: str, message: str, data: dict[str, Any]) -> None:
        progress(message)
        # Every node the zone's creates are for hears it: a row with a "try" was sent to
        # the cloud, one without is a launch that stopped before (`forget_if_never_sent`).
        for plan in missing if kind == "try" else [head]:
            state.event(plan.name, kind, message, data)

    if missing:
        zones = {r.zone for r in found if isinstance(r, p.InstanceRecord) and r.zone}
        names = ", ".join(plan.name for plan in missing)
        if len(missing) < len(plans) and zones:
            zone = sorted(zones)[0]
            progress(f"creating {names} in {zone}, the cluster's zone")
            for plan in missing:
                state.event(plan.name, "try", f"creating in {zone}", {"zone": zone})
            create_in_zone(
                provider_for, [p_.spec for p_ in missing], zone,
                on_created=on_created, on_removed=on_removed,
            )  # fmt: skip
        else:
            create_cluster(
                provider_for, [p_.spec for p_ in missing], on_event,
                on_created=on_created, on_removed=on_removed,
            )  # fmt: skip

    def settle(rt: Runtime, plan: LaunchPlan) -> Any:
        mine = rt.state()
        record = ensure_running(mine, rt.provider(provider_name), plan.spec, progress)
        row = mine.get(plan.name)
        if row is not None and "stopped_by" in row.extra:
            mine.update(plan.name, extra={k: v for k, v in row.extra.items() if k != "stopped_by"})
        return record

    raise_first(in_threads(runtime, plans, settle), [plan.name for plan in plans])


def forget_unsent(
    runtime: Runtime, head: LaunchPlan, fresh: list[str], error: BaseException
) -> None:
    """After a failed launch: drop the new nodes' rows that no create was sent for (as a lone
    launch does), then the cluster's rule and secret once no node of it is left, so refused
    credentials or an exhausted quota leave nothing that `down` could not clear."""
    from orchestrate.core.flows.cluster_ops import release_network
    from orchestrate.core.flows.launch import forget_if_never_sent

    state = runtime.state()
    for name in fresh:
        forget_if_never_sent(state, name, error)
    if state.nodes(head.name) or not fresh:
        return
    try:
        release_network(runtime, head.name, head.provider.name, head.options, lambda _: None)
    except OrchestrateError as exc:
        if isinstance(error, OrchestrateError):
            error.notes.append(f"the cluster's network rule is left: {exc.line()}")


def contexts(state: State, plans: list[LaunchPlan]) -> list[ClusterContext]:
    """Each node's place in the cluster, from the stored rows (internal addresses)."""
    from orchestrate.core.cloud.instances import INTERNAL_KEY

    def internal(row: InstanceRow | None) -> str:
        assert row is not None and row.address
        return str(row.extra.get(INTERNAL_KEY) or row.address)

    head_row = state.get(plans[0].name)
    head_address = internal(head_row)
    size = len(plans)
    found = []
    for index, plan in enumerate(plans):
        found.append(
            ClusterContext(
                name=plans[0].name,
                role="head" if index == 0 else "worker",
                index=index,
                size=size,
                head_address=head_address,
                node_address=internal(state.get(plan.name)),
            )
        )
    return found


def set_up_worker(runtime: Runtime, plan: LaunchPlan, token: str, progress: Progress) -> str:
    """Connect to one worker (pinning its key), give it the secret, run its host steps."""
    from orchestrate.core.flows.launch import setup_host
    from orchestrate.core.flows.rows import connect

    def say(message: str) -> None:
        progress(f"[{plan.name}] {message.strip()}")

    session = connect(runtime, plan.name, plan.key, say)
    try:
        if plan.spec.startup_script is not None:
            from orchestrate.core.host.bootstrap import wait_done

            session = wait_done(session, say)
        assert plan.context.cluster is not None
        write_token(session, plan.context.cluster, token)
        report = setup_host(runtime, session, plan.context, say)
        return str(report.summary())
    finally:
        session.close()


def bring_up_cluster(
    runtime: Runtime,
    plans: list[LaunchPlan],
    *,
    port: int,
    port_explicit: bool,
    detach: bool,
    progress: Progress,
    foreground: Callable[[Any, str], None] | None = None,
) -> Outcome:
    """Create or repair the cluster of `plans` (head first) and open the head's notebook."""
    from concurrent.futures import ThreadPoolExecutor

    from orchestrate.core.cloud.instances import record_of
    from orchestrate.core.flows.launch import bring_up_host, refuse_a_move
    from orchestrate.core.flows.still_running import still_running_note
    from orchestrate.core.ssh import sshconfig

    state = runtime.state()
    head = plans[0]
    name = head.name
    provider = head.provider
    assert isinstance(provider, p.ClusterNetworks)
    for plan in plans:
        row = state.get(plan.name)
        if row is not None:
            refuse_a_move(row, plan)
    fresh = [plan.name for plan in plans if state.get(plan.name) is None]
    for index, plan in enumerate(plans):
        record_intent(state, plan)
        state.update(plan.name, cluster=name, node_index=index)
    crash_point("after-intent")
    try:
        provider.ensure_cluster_network(name, head.options)
        crash_point("cluster-after-network")
        ensure_nodes(runtime, plans, progress)
    except BaseException as exc:
        forget_unsent(runtime, head, fresh, exc)
        note = still_running_note(state, name, armed=False)
        if note and isinstance(exc, OrchestrateError):
            exc.notes.append(note)
        raise
    crash_point("after-create")
    token = cluster_token(name)
    crash_point("cluster-after-token")
    for plan, context in zip(plans, contexts(state, plans), strict=True):
        plan.context = dataclasses.replace(plan.context, cluster=context)
    workers = plans[1:]
    pool = ThreadPoolExecutor(max_workers=max(1, min(16, len(workers))))

    def one(plan: LaunchPlan) -> Any:
        mine = _thread_runtime(runtime)
        try:
            return set_up_worker(mine, plan, token, progress)
        finally:
            mine.close()

    futures = [pool.submit(one, plan) for plan in workers]
    waited: list[bool] = []

    def workers_done() -> None:
        """Wait for every worker's setup; raise the first failure, naming its node."""
        if waited:
            return
        waited.append(True)
        results: list[Any] = []
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:
                results.append(exc)
        sshconfig.write(state.all(), head.key.private_path)
        raise_first(results, [plan.name for plan in workers])
        state.event(name, "cluster", f"{len(plans)} nodes ready")

    def hold(tunnel: Any, url: str) -> None:
        # The tunnel runs over the head's connection: the foreground starts once every
        # worker is set up, and a worker that failed ends the launch before it.
        workers_done()
        if foreground is not None:
            foreground(tunnel, url)

    cluster = head.context.cluster
    assert cluster is not None
    row = state.get(name)
    assert row is not None
    armed = [bool(row.setup_hash)]
    try:
        outcome = bring_up_host(
            runtime, head, row, record_of(row, provider), port=port,
            port_explicit=port_explicit, detach=detach, progress=progress, foreground=hold,
            on_armed=lambda: armed.append(True),
            before_setup=lambda session: write_token(session, cluster, token),
        )  # fmt: skip
        workers_done()
    except OrchestrateError as exc:
        note = still_running_note(state, name, armed=any(armed))
        if note:
            exc.notes.append(note)
        raise
    finally:
        pool.shutdown(wait=True)
    return outcome
