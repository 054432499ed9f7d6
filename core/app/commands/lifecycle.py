"""launch, start, stop, down: the commands that create, bill and stop billing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Optional

import typer
from orchestrate.core.app.commands.confirm import confirm_or_refuse
from orchestrate.core.flows.rows import row_named
from orchestrate.core.wiring.runtime import Runtime, echo

# typer needs Optional[...] rather than X | None on Python 3.10.
# ruff: noqa: UP045


def _progress(message: str) -> None:
    echo(message, err=True)


def _foreground(open_browser: bool) -> Any:
    def run(tunnel: Any, url: str) -> None:
        from orchestrate.core.flows.notebook_url import hold_in_foreground

        hold_in_foreground(tunnel, url, browse=open_browser, say=echo, say_err=_progress)

    return run


def register(app: typer.Typer) -> None:
    @app.command("launch")
    def launch_command(
        ctx: typer.Context,
        name: str = typer.Argument("notebook", help="Instance name (reused on re-run)."),
        provider: Optional[str] = typer.Option(None, "--provider", help="Cloud provider."),
        profile: Optional[str] = typer.Option(None, "--profile", "-p", help="Profile name."),
        gpu: Optional[str] = typer.Option(None, "--gpu", help="GPU TYPE[:COUNT] or none."),
        zone: Optional[str] = typer.Option(None, "--zone", help="Zone to create in."),
        host: Optional[str] = typer.Option(
            None, "--host", help="user@address[:port] (ssh provider)."
        ),
        image: Optional[str] = typer.Option(None, "--image", help="Notebook image."),
        port: Optional[int] = typer.Option(None, "--port", help="Local port (8899)."),
        autostop: Optional[str] = typer.Option(None, "--autostop", help="Idle time or off."),
        nodes: Optional[int] = typer.Option(
            None, "--nodes", help="Instances: 1, or more for a Ray cluster (head + workers)."
        ),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print requests and scripts."),
        detach: bool = typer.Option(False, "--detach", help="Tunnel in the background."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    ) -> None:
        """Create (or reuse) a GPU instance and open Jupyter on it through a tunnel."""
        from orchestrate.core.flows.launch import bring_up, dry_run_text, existing_token, make_plan

        _check_name(name)
        runtime: Runtime = ctx.obj
        chosen = runtime.profile(
            profile,
            overrides={
                "provider": provider, "image": image, "port": port, "autostop": autostop,
                "nodes": nodes,
            },
        )  # fmt: skip
        overrides = {
            key: value
            for key, value in (("gpu", gpu), ("zone", zone), ("host", host))
            if value is not None
        }
        row = runtime.state().get(name) if not dry_run else None
        if row is not None and row.is_worker:
            from orchestrate.core.flows.rows import row_named

            row_named(runtime, name)  # refused with the cluster's name
        count = _node_count(runtime, row, chosen)
        if count > 1 or (row is not None and row.cluster is not None):
            _launch_cluster(
                runtime, name, chosen, overrides, row, count, dry_run=dry_run, yes=yes,
                port_given=port is not None, detach=detach, no_browser=no_browser,
                nodes_flag=nodes is not None,
            )  # fmt: skip
            return
        plan = make_plan(runtime, name, chosen, overrides, token=existing_token(row))
        if not dry_run:
            from orchestrate.core.flows.background import check_port

            # Bad input first: a busy --port is refused before the price is even shown.
            check_port(row, chosen.port, explicit=port is not None)
        # A dry run builds its requests first: a plan the provider refuses (the ssh provider
        # without a host) is one line, not one after the price.
        text = dry_run_text(runtime, plan) if dry_run else None
        _price_gate(plan, chosen.confirm_above, yes=yes or dry_run)
        if text is not None:
            echo(text)
            return
        outcome = bring_up(
            runtime,
            plan,
            port=chosen.port,
            port_explicit=port is not None,
            detach=detach,
            progress=_progress,
            foreground=_foreground(not no_browser),
        )
        if detach or outcome.kept_tunnel:
            from orchestrate.core.flows.notebook_url import show_url

            show_url(outcome.url, browse=not no_browser, say=echo, say_err=_progress)
            if outcome.kept_tunnel and not detach:
                _progress(f"the background tunnel keeps serving; `orchestrate tunnel {name} "
                          "--close` ends it")  # fmt: skip

    @app.command("start")
    def start_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
        port: Optional[int] = typer.Option(None, "--port", help="Local port."),
        detach: bool = typer.Option(False, "--detach", help="Tunnel in the background."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Do not open a browser."),
    ) -> None:
        """Start a stopped instance: new address, host-key check, container and tunnel back."""
        from orchestrate.core.flows.background import check_port, wanted_port
        from orchestrate.core.flows.launch import bring_up, make_plan

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        if row.cluster is not None:
            from orchestrate.core.flows.background import wanted_port as wanted
            from orchestrate.core.flows.cluster import bring_up_cluster, node_plans
            from orchestrate.core.flows.cluster_ops import nodes_of

            plans = node_plans(
                runtime, name, row.launched_profile(), {}, token=row.token,
                nodes=len(nodes_of(runtime, row)),
            )  # fmt: skip
            check_port(row, wanted(row, port), explicit=port is not None)
            outcome = bring_up_cluster(
                runtime, plans, port=wanted(row, port), port_explicit=port is not None,
                detach=detach, progress=_progress, foreground=_foreground(not no_browser),
            )  # fmt: skip
            _say_outcome(outcome, detach=detach, browse=not no_browser, name=name)
            return
        plan = make_plan(runtime, name, row.launched_profile(), {}, token=row.token)
        check_port(row, wanted_port(row, port), explicit=port is not None)
        outcome = bring_up(
            runtime,
            plan,
            port=wanted_port(row, port),
            port_explicit=port is not None,
            detach=detach,
            progress=_progress,
            foreground=_foreground(not no_browser),
        )
        if detach or outcome.kept_tunnel:
            from orchestrate.core.flows.notebook_url import show_url

            show_url(outcome.url, browse=not no_browser, say=echo, say_err=_progress)

    @app.command("stop")
    def stop_command(
        ctx: typer.Context, name: str = typer.Argument(..., help="Instance name.")
    ) -> None:
        """Stop the instance (billing for compute stops); notebooks stay on its disk."""
        from orchestrate.core.flows.teardown import stop

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        if row.cluster is not None:
            from orchestrate.core.flows.cluster_ops import stop_cluster

            if stop_cluster(runtime, row, progress=_progress):
                echo(f"{name} stopped (every node); `orchestrate start {name}` brings it back")
            else:
                echo(f"{name} was never created; nothing to stop (use `down` to forget it)")
            return
        if stop(runtime, row, progress=_progress):
            echo(f"{name} stopped; `orchestrate start {name}` brings it back")
        else:
            echo(f"{name} was never created; nothing to stop (use `down` to forget it)")

    @app.command("down")
    def down_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
        sync_notebooks: Optional[Path] = typer.Option(
            None, "--sync-notebooks", help="Copy the notebooks folder here first."
        ),
        force: bool = typer.Option(
            False, "--force", help="Forget a host that does not answer (ssh provider)."
        ),
    ) -> None:
        """Delete the instance and everything orchestrate made for it."""
        from orchestrate.core.flows.teardown import down

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        what, deleted = f"{name} on {row.provider} and its disk", f"{name} deleted"
        if row.cluster is not None:
            from orchestrate.core.flows.cluster_ops import down_cluster, nodes_of

            count = len(nodes_of(runtime, row))
            what = f"the cluster {name} ({count} nodes) on {row.provider} and its disks"
            deleted = f"{name} deleted ({count} nodes)"
        if not yes:
            confirm_or_refuse(
                f"delete {what}?",
                refused=f"down cancelled: {name} was not deleted",
                no_terminal_hint="pass --yes to delete it without asking",
            )
        if row.cluster is not None:
            down_cluster(runtime, row, sync_to=sync_notebooks, progress=_progress, force=force)
        else:
            down(runtime, row, sync_to=sync_notebooks, progress=_progress, force=force)
        echo(deleted)

    @app.command("scale")
    def scale_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Cluster name."),
        nodes: int = typer.Option(..., "--nodes", help="Nodes wanted, the head included."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    ) -> None:
        """Add workers to a cluster, or remove its highest-numbered ones (drained first)."""
        from orchestrate.core.flows.background import wanted_port
        from orchestrate.core.flows.cluster import bring_up_cluster, node_plans
        from orchestrate.core.flows.cluster_ops import (
            check_scale,
            nodes_of,
            remove_workers,
            with_nodes,
        )

        runtime: Runtime = ctx.obj
        row = row_named(runtime, name)
        check_scale(row, nodes)
        have = len(nodes_of(runtime, row))
        profile = with_nodes(row.launched_profile(), nodes)
        if nodes < have:
            removed = remove_workers(runtime, row, nodes, progress=_progress)
            from orchestrate.core.store.profiles import profile_snapshot

            runtime.state().update(name, profile=profile_snapshot(profile))
            echo(f"{name} scaled to {nodes} nodes (removed {', '.join(removed)})")
            return
        plans = node_plans(runtime, name, profile, {}, token=row.token, nodes=nodes)
        if nodes > have:
            _price_gate(plans[0], profile.confirm_above, yes=yes, nodes=nodes)
        outcome = bring_up_cluster(
            runtime, plans, port=wanted_port(row, None), port_explicit=False, detach=True,
            progress=_progress,
        )  # fmt: skip
        echo(f"{name} has {nodes} nodes")
        if outcome.dashboard_port:
            echo(f"dashboard: http://localhost:{outcome.dashboard_port}")


def _node_count(runtime: Runtime, row: Any, profile: Any) -> int:
    """Nodes this launch wants: the profile's (or --nodes) when above 1; a relaunch of a
    cluster with a profile that says 1 repairs the cluster as it is."""
    if profile.nodes > 1 or row is None or row.cluster is None:
        return int(profile.nodes)
    from orchestrate.core.flows.cluster_ops import nodes_of

    return max(1, len(nodes_of(runtime, row)))


def _launch_cluster(
    runtime: Runtime,
    name: str,
    chosen: Any,
    overrides: dict[str, Any],
    row: Any,
    count: int,
    *,
    dry_run: bool,
    yes: bool,
    port_given: bool,
    detach: bool,
    no_browser: bool,
    nodes_flag: bool,
) -> None:
    """`launch NAME --nodes N`: checked, priced and confirmed before anything is created."""
    from orchestrate.core.flows.background import check_port
    from orchestrate.core.flows.cluster import (
        bring_up_cluster,
        check_cluster_name,
        node_plans,
        nodes_where,
        require_clusters,
    )
    from orchestrate.core.flows.launch import dry_run_text, existing_token

    if row is not None and row.cluster is None:
        from orchestrate.core.api.errors import UsageError

        raise UsageError(
            f"{name} is a lone instance; it cannot become a cluster of {count} nodes",
            hint=f"`orchestrate down {name}` first, or launch the cluster under another name",
        )
    check_cluster_name(name, count)
    require_clusters(runtime.provider(chosen.provider), count, nodes_where(chosen, nodes_flag))
    with_count = dataclasses.replace(chosen, values={**chosen.values, "nodes": count})
    plans = node_plans(runtime, name, with_count, overrides, token=existing_token(row), nodes=count)
    if not dry_run:
        check_port(row, chosen.port, explicit=port_given)
    text = dry_run_text(runtime, plans[0]) if dry_run else None
    _price_gate(plans[0], chosen.confirm_above, yes=yes or dry_run, nodes=count)
    if text is not None:
        echo(f"# a cluster of {count} nodes: {', '.join(plan.name for plan in plans)}, "
             "each created like this")  # fmt: skip
        echo(text)
        return
    outcome = bring_up_cluster(
        runtime, plans, port=chosen.port, port_explicit=port_given, detach=detach,
        progress=_progress, foreground=_foreground(not no_browser),
    )  # fmt: skip
    _say_outcome(outcome, detach=detach, browse=not no_browser, name=name)


def _say_outcome(outcome: Any, *, detach: bool, browse: bool, name: str) -> None:
    if not (detach or outcome.kept_tunnel):
        return  # the tunnel ran in the foreground, which said where the dashboard was
    if outcome.dashboard_port:
        _progress(f"dashboard: http://localhost:{outcome.dashboard_port}")
    if detach or outcome.kept_tunnel:
        from orchestrate.core.flows.notebook_url import show_url

        show_url(outcome.url, browse=browse, say=echo, say_err=_progress)


def _price_gate(plan: Any, threshold: float | None, *, yes: bool, nodes: int = 1) -> None:
    """Show the estimated price per hour before anything is created, and ask above the
    profile's `confirm_above` unless --yes. An unknown price is said and asked about only
    when `confirm_above` is 0 (`billing.confirm_needed`)."""
    from orchestrate.core.money import prices
    from orchestrate.core.money.billing import confirm_needed
    from orchestrate.core.money.costs import estimate_for

    estimate = estimate_for(plan.provider, plan.options)
    if estimate is not None and nodes > 1:
        estimate = prices.for_nodes(estimate, nodes)
    if estimate is None:
        _progress(f"estimated price: unknown ({plan.provider.name} states no price)")
        if not yes and confirm_needed(None, threshold):
            confirm_or_refuse(
                f"the price on {plan.provider.name} is unknown to orchestrate "
                "(confirm_above is 0): create it anyway?",
                refused="launch cancelled: nothing was created",
                no_terminal_hint=_UNKNOWN_PRICE_HINT,
            )
        return
    _progress(prices.price_line(estimate))
    from orchestrate.core.api.gpu_catalog import stale_note
    from orchestrate.core.api.provider import OwnPrices

    stale = None if isinstance(plan.provider, OwnPrices) else stale_note()  # core's file only
    if stale is not None:
        _progress(stale)
    if yes or not confirm_needed(estimate.per_hour, threshold):
        return
    assert threshold is not None
    confirm_or_refuse(
        prices.confirm_question(estimate, threshold),
        refused="launch cancelled: nothing was created",
        no_terminal_hint=_UNKNOWN_PRICE_HINT
        if estimate.per_hour is None
        else "pass --yes to launch anyway, or raise confirm_above in the profile",
    )


_UNKNOWN_PRICE_HINT = "pass --yes to launch anyway, or set confirm_above above 0 in the profile"


#: GCE's rule for resource names, which the other clouds accept too: the name is also a file
#: name (host and tunnel logs), an ssh Host alias and a label value, so nothing else is safe.
_NAME = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")


def _check_name(name: str) -> None:
    """A new instance's name, checked before anything is written or sent."""
    if not _NAME.fullmatch(name):
        from orchestrate.core.api.errors import UsageError

        raise UsageError(
            f"instance name {name!r} is not valid",
            hint="use lowercase letters, digits and hyphens, starting with a letter, "
            "at most 63 characters",
        )
