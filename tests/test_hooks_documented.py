"""Meta-tests: every hook spec is documented and exercised by at least one test.

Like datasette's: a hook without a docstring or without a test that calls or implements it
is how plugin APIs rot.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from orchestrate.core.api import hooks

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


def test_every_hook_spec_has_its_own_test() -> None:
    """As datasette does: a test function named ``test_hook_...`` names each hook (its name
    without the ``orchestrate_`` prefix). A mention in a comment does not count."""
    import ast

    here = Path(__file__).resolve()
    names: list[str] = []
    for path in TESTS.rglob("*.py"):
        if path.resolve() == here:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names += [
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_")
        ]
    missing = [
        name
        for name in SPECS
        if not any(name.removeprefix("orchestrate_") in test for test in names)
    ]
    assert not missing, f"hooks without a test_hook_... test: {missing}"


def test_every_hook_spec_is_in_contributing() -> None:
    text = (TESTS.parent / "CONTRIBUTING.md").read_text(encoding="utf-8")
    missing = [name for name in SPECS if name not in text]
    assert not missing, f"hooks not documented in CONTRIBUTING.md: {missing}"
