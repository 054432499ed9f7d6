"""Meta-tests: every hook spec is documented and exercised by at least one test.

Like datasette's: a hook without a docstring or without a test that calls or implements it
is how plugin APIs rot.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from orchestrate.core import hooks

SPECS = sorted(
    name
    for name, value in vars(hooks).items()
    if name.startswith("orchestrate_") and callable(value)
)
TESTS = Path(__file__).parent


def test_there_are_hook_specs() -> None:
    assert "orchestrate_register_providers" in SPECS
    assert len(SPECS) >= 5


def test_every_hook_spec_has_a_docstring_saying_when_and_what() -> None:
    for name in SPECS:
        doc = inspect.getdoc(getattr(hooks, name)) or ""
        assert len(doc) > 40, f"{name} needs a docstring: when is it called, what does it return"
        assert "call" in doc.lower(), f"{name}'s docstring must say when it is called"
        assert "return" in doc.lower(), f"{name}'s docstring must say what it returns"


def test_every_hook_spec_is_named_by_a_test() -> None:
    here = Path(__file__).resolve()
    sources = "\n".join(
        path.read_text(encoding="utf-8") for path in TESTS.rglob("*.py") if path.resolve() != here
    )
    missing = [name for name in SPECS if name not in sources]
    assert not missing, f"hooks without a test: {missing}"


def test_every_hook_spec_is_in_contributing() -> None:
    text = (TESTS.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    missing = [name for name in SPECS if name not in text]
    assert not missing, f"hooks not documented in CONTRIBUTING.md: {missing}"
