"""Which modules one CLI run imports, seen from a fresh interpreter.

The test process itself has long since imported libcloud, paramiko and every plugin, so
start-up laziness can only be checked in a new process running the real entry point.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, contextlib, io
from orchestrate.core.app.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "mods": sorted(sys.modules)}))
"""


def modules_after(*args: str) -> tuple[int, set[str]]:
    """`orchestrate ARGS` run in a fresh interpreter: its exit code and every module name
    it had imported when it finished."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
        check=True,
    ).stdout  # fmt: skip
    data = json.loads(out.strip().splitlines()[-1])
    return data["code"], set(data["mods"])


def top_level(modules: set[str]) -> set[str]:
    """The top-level packages among `modules` (``libcloud`` for ``libcloud.compute``)."""
    return {name.split(".")[0] for name in modules}
