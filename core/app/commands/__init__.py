"""Built-in commands, one module per group, each with a `register(app)` function.

Command modules import only what their help text needs; the work is imported inside the
command functions.
"""

from __future__ import annotations

import importlib

import typer

#: Modules under orchestrate.core.app.commands that define built-in commands.
COMMAND_MODULES: tuple[str, ...] = ("lifecycle", "access", "open_notebook", "catalog", "gpus")


def register_builtin_commands(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"orchestrate.core.app.commands.{name}")
        module.register(app)
