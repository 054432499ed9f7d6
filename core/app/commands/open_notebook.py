"""open: the notebook's URL again, in the browser, with a tunnel started if none is alive."""

from __future__ import annotations

import typer
from orchestrate.core.wiring.runtime import Runtime, echo


def register(app: typer.Typer) -> None:
    @app.command("open")
    def open_command(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="Instance name."),
        no_browser: bool = typer.Option(False, "--no-browser", help="Only print the URL."),
    ) -> None:
        """Print the notebook URL and open it, starting the background tunnel if needed."""
        from orchestrate.core.flows.notebook_url import ensure_url, show_url

        runtime: Runtime = ctx.obj
        opened = ensure_url(runtime, name, progress=lambda m: echo(m, err=True))
        show_url(
            opened.url,
            browse=not no_browser,
            say=echo,
            say_err=lambda m: echo(m, err=True),
        )
