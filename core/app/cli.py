"""The `orchestrate` command: a Typer app whose commands come from core and from plugins.

`main()` builds the plugin manager and fires `orchestrate_register_commands(app)`; nothing
is registered at import time, so importing this module is cheap and side-effect free.
Every `OrchestrateError` is printed as one line with a non-zero exit; `--debug` shows the
traceback instead.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import typer
from orchestrate.core.api import compat
from orchestrate.core.api.errors import Interrupted, OrchestrateError
from orchestrate.core.wiring.runtime import Runtime, echo

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

    from orchestrate.core.app.commands import register_builtin_commands

    register_builtin_commands(app)
    return app


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"", "0", "false", "f", "no", "n", "off"})


def _to_bool(value: Any) -> bool:
    """A flag's value: bools as they are, the usual words from environment variables."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(value)


#: Annotations `_plain_values` converts itself; anything else stays with Typer.
_PLAIN_TYPES: dict[Any, Any] = {str: str, int: int, float: float, Path: Path, bool: _to_bool}


def _plain_values(command: Any) -> None:
    """Convert plain str/int/float/Path parameters without Typer's pydantic layer.

    Why: Typer (0.2x) converts every non-flag value, even an absent one, through a pydantic
    TypeAdapter, and importing pydantic and building the first adapters costs 300-400 ms,
    more than the rest of the start-up together, on every command but --help. Our own
    parameters (and most plugins') are plain names, numbers and paths with no constraint,
    which need no validation framework. Each such parameter gets a small converter in the
    slot Typer fills lazily (`_runtime_param`); parameters with a parser, bounds, choices,
    files, lists or path checks keep Typer's. Where a Typer release has no such slot, this
    does nothing and Typer converts as before: slower, never different.
    """
    found = compat.typer_runtime_param()
    if found is None:
        return
    RuntimeParam, BadParameter = found

    @dataclasses.dataclass(frozen=True)
    class PlainParam(RuntimeParam):  # type: ignore[misc,valid-type]
        convert: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            if isinstance(value, bytes):
                value = value.decode(sys.getfilesystemencoding(), "replace")
            try:
                return self.convert(value)
            except (TypeError, ValueError):
                kind = {int: "integer", float: "number", _to_bool: "boolean"}.get(
                    self.convert, "value"
                )
                message = f"{value!r} is not a valid {kind}."
                raise BadParameter(message, ctx=ctx, param=param) from None

    def lighten(param: Any) -> Any:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            return param
        info = descriptor.parameter_info
        convert = _PLAIN_TYPES.get(descriptor.annotation)
        plain = (
            convert is not None
            and descriptor.file_annotation is None
            and not param.multiple
            and param.nargs == 1
            and info.parser is None
            and info.min is None
            and info.max is None
            and not (info.exists or info.resolve_path or info.allow_dash)
            and info.path_type is None
            and info.dir_okay
            and info.file_okay
        )
        if plain:
            param._runtime_param = PlainParam(
                parameter_info=info, annotation=descriptor.annotation, convert=convert
            )
        return param

    def visit(cmd: Any) -> None:
        for param in getattr(cmd, "params", ()):
            lighten(param)
        # --help is made afresh for each context, so it is lightened as it is made.
        make_help = getattr(cmd, "get_help_option", None)
        if make_help is not None:
            cmd.get_help_option = lambda ctx, _make=make_help: lighten(_make(ctx))
        for sub in getattr(cmd, "commands", {}).values():
            visit(sub)

    visit(command)


def _debug_requested(argv: Sequence[str]) -> bool:
    """Whether ``--debug`` is among the options before the command (``orchestrate --debug
    launch``). After it, ``--debug`` is an unknown option of that command: an error to
    print as one line, not a request for tracebacks."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--debug":
            return True
        if arg == "--" or not arg.startswith("-"):
            return False
        i += 2 if arg == "--config" else 1
    return False


def _interrupts_said(command: Any) -> None:
    """Make Ctrl-C in any command end as one line, "orchestrate: interrupted", exit 130.

    Why: Typer from 0.26 turns a KeyboardInterrupt that leaves a command into a silent
    Exit(130) before `main` can see it (older releases raised Abort, which `main` words).
    Each command's callback turns it into `Interrupted` first, which Typer lets through, so
    the line is the same whichever Typer runs. A command that handles Ctrl-C itself (the
    foreground tunnel, `launch`'s still-running line) is unchanged.
    """
    for sub in getattr(command, "commands", {}).values():
        _interrupts_said(sub)
    callback = getattr(command, "callback", None)
    if callback is None:
        return

    @functools.wraps(callback)
    def said(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise Interrupted("interrupted") from exc

    command.callback = said


def one_line(text: str) -> str:
    """`text` with every control character written as an escape: an error is one line on
    the terminal whatever a user typed (click quotes a bad argument as it came, with its
    carriage returns and newlines)."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    click = compat.typer_click()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    if debug:
        from orchestrate.core.ssh import liblogs

        liblogs.SHOW = True
    runtime: Runtime | None = None
    try:
        from orchestrate.core.wiring.registry import build_manager

        pm = build_manager()
        runtime = Runtime(pm=pm, debug=debug)
        app = make_app()
        pm.hook.orchestrate_register_commands(app=app)
        command = typer.main.get_command(app)
        _plain_values(command)
        _interrupts_said(command)
        result = command.main(
            args=args, prog_name="orchestrate", standalone_mode=False, obj=runtime
        )
        return int(result) if isinstance(result, int) else 0
    except OrchestrateError as exc:
        if debug:
            raise
        echo(f"orchestrate: {one_line(exc.line())}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except typer.Abort:
        echo("orchestrate: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            raise
        echo(f"orchestrate: {one_line(exc.format_message())}", err=True)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        echo("orchestrate: interrupted", err=True)
        return 130
    except Exception as exc:  # a bug of ours or a plugin's: still one line, unless --debug
        if debug:
            raise
        echo(
            one_line(
                f"orchestrate: unexpected {type(exc).__name__}: {exc}"
                " (rerun with --debug for details)"
            ),
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
