"""A third-party plugin made on the fly: a module plus a dist-info folder on sys.path.

importlib.metadata finds distributions by scanning sys.path, so this exercises the real
entry-point discovery without a pip install (the example package's test does the pip path).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

PLUGIN_SOURCE = '''
from orchestrate.core.api.errors import ProfileError
from orchestrate.core.api.hooks import hookimpl
from orchestrate.core.api.provider import InstanceRecord, Provider


class ToyProvider(Provider):
    """Validates its sub-table only; the profile tests need no more of a cloud."""

    name = "toy"
    description = "toy cloud used by orchestrate's own tests"

    def validate_options(self, table, where):
        allowed = {"region": str, "size": int, "credentials": str}
        for key, value in table.items():
            if key not in allowed:
                raise ProfileError(f"{where}: unknown key {key!r}")
            if not isinstance(value, allowed[key]):
                raise ProfileError(f"{where}: key {key!r} must be {allowed[key].__name__}")
        return {"region": "r1", "size": 1, **table}

    def redacted_options(self, options):
        return dict(options)

    def create(self, spec, zone):
        raise NotImplementedError("the toy cloud creates nothing")

    def get(self, record):
        return record

    def start(self, record):
        return record

    def stop(self, record):
        return None

    def destroy(self, record):
        return None


@hookimpl
def orchestrate_register_providers(register):
    register(ToyProvider())


@hookimpl
def orchestrate_register_commands(app):
    @app.command("toy-hello")
    def hello() -> None:
        """Say hello from a third-party plugin."""
        print("hello from toy")
'''

MISSPELT_SOURCE = """
from orchestrate.core.api.hooks import hookimpl


@hookimpl
def orchestrate_register_provider(register):
    register(None)
"""


def install_toy(root: Path, *, source: str = PLUGIN_SOURCE, module: str = "orch_toy") -> Path:
    """Write the plugin module and its dist-info under `root`; put `root` on sys.path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / "orchestrate_toy-1.2.3.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orchestrate-toy\nVersion: 1.2.3\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(f"[orchestrate]\ntoy = {module}\n", encoding="utf-8")
    return root
