"""The `orchestrate` command: a Typer app whose commands come from core and from plugins.

`main()` builds the plugin manager and fires `orchestrate_register_commands(app)`; nothing
is registered at import time, so importing this module is cheap and side-effect free.
Every `OrchestrateError` is printed as one line with a non-zero exit; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from orchestrate.core.errors import OrchestrateError
from orchestrate.core.runtime import Runtime, echo

HELP = "A GPU Jupyter notebook on any cloud in one command, and never a GPU billing by accident."


def make_app() -> typer.Typer:
    """The app with the built-in commands; plugins add theirs in `main()`."""
    app = typer.Typer(
        name="orchestrate",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        ctx: typer.Context,
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks and verbose logs."),
        config: Optional[Path] = typer.Option(  # noqa: UP045 - typer needs Optional on 3.10
            None, "--config", help="An extra profile file, read after the usual ones."
        ),
    ) -> None:
        runtime: Runtime = ctx.obj
        runtime.debug = debug
        runtime.config = config

    from orchestrate.core.commands import register_builtin_commands

    register_builtin_commands(app)
    return app


def _click_module() -> Any:
    """The click that Typer runs on. Recent Typer vendors click as `typer._click`; importing
    the standalone click as well would cost start-up time for nothing."""
    try:
        import typer._click as vendored  # type: ignore[import-not-found,unused-ignore]

        return vendored
    except ImportError:  # older Typer runs on the standalone click
        import click

        return click


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    click = _click_module()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    runtime: Runtime | None = None
    try:
        from orchestrate.core.registry import build_manager

        pm = build_manager()
        runtime = Runtime(pm=pm, debug=debug)
        app = make_app()
        pm.hook.orchestrate_register_commands(app=app)
        command = typer.main.get_command(app)
        result = command.main(
            args=args, prog_name="orchestrate", standalone_mode=False, obj=runtime
        )
        return int(result) if isinstance(result, int) else 0
    except OrchestrateError as exc:
        if debug:
            raise
        echo(f"orchestrate: {exc.line()}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except typer.Abort:
        echo("orchestrate: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        echo(f"orchestrate: {exc.format_message()}", err=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        echo("orchestrate: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug of ours or a plugin's: still one line, unless --debug
        if debug:
            raise
        echo(
            f"orchestrate: unexpected {type(exc).__name__}: {exc} (rerun with --debug for details)",
            err=True,
        )
        return 1
    finally:
        if runtime is not None:
            runtime.close()


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
