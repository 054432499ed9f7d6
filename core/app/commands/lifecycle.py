"""launch, start, stop, down: the commands that create, bill and stop billing."""

from __future__ import annotations

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
            overrides={"provider": provider, "image": image, "port": port, "autostop": autostop},
        )
        overrides = {
            key: value
            for key, value in (("gpu", gpu), ("zone", zone), ("host", host))
            if value is not None
        }
        row = runtime.state().get(name) if not dry_run else None
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
        if stop(runtime, row_named(runtime, name), progress=_progress):
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
        if not yes:
            confirm_or_refuse(
                f"delete {name} on {row.provider} and its disk?",
                refused=f"down cancelled: {name} was not deleted",
                no_terminal_hint="pass --yes to delete it without asking",
            )
        down(runtime, row, sync_to=sync_notebooks, progress=_progress, force=force)
        echo(f"{name} deleted")


def _price_gate(plan: Any, threshold: float | None, *, yes: bool) -> None:
    """Show the estimated price per hour before anything is created, and ask above the
    profile's `confirm_above` unless --yes. An unknown price is said and asked about only
    when `confirm_above` is 0 (`billing.confirm_needed`)."""
    from orchestrate.core.money import prices
    from orchestrate.core.money.billing import confirm_needed
    from orchestrate.core.money.costs import estimate_for

    estimate = estimate_for(plan.provider, plan.options)
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
