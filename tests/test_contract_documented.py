"""CONTRIBUTING's provider section states each contract method as `name(args)`; this checks
every one against the code (`inspect.signature`), so the documentation cannot drift."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from orchestrate.core.api.provider import Provider
from orchestrate.core.cloud.failover import create_with_failover

DOC = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
SECTION = DOC[DOC.index("### 2. The contract") : DOC.index("### 3. The spec")]


def _documented() -> dict[str, list[str]]:
    """`name(a, b)` at the start of a table row -> its parameter names."""
    rows = re.findall(r"^\| `(\w+)\(([^)]*)\)`", SECTION, flags=re.MULTILINE)
    return {name: [a.strip() for a in args.split(",") if a.strip()] for name, args in rows}


def test_every_documented_method_has_that_signature() -> None:
    documented = _documented()
    assert len(documented) >= 15, documented
    for name, params in documented.items():
        method = getattr(Provider, name, None)
        if method is None:  # the optional capabilities (RefreshesMany, GpuLocations, ...)
            from orchestrate.core.api import provider as p

            capabilities = (p.RefreshesMany, p.GpuLocations, p.OwnPrices, p.ClusterNetworks)
            (method,) = [getattr(c, name) for c in capabilities if hasattr(c, name)]
        actual = [n for n in inspect.signature(method).parameters if n != "self"]
        assert actual == params, f"CONTRIBUTING says {name}({', '.join(params)}), code {actual}"


def test_every_public_provider_method_is_documented() -> None:
    public = {
        name
        for name, member in vars(Provider).items()
        if callable(member) and not name.startswith("_")
    }
    assert public <= set(_documented()), public - set(_documented())


def test_every_optional_capability_is_documented() -> None:
    from orchestrate.core.api import provider as p

    for capability in (p.RefreshesMany, p.GpuLocations, p.OwnPrices, p.ClusterNetworks):
        methods = [n for n, m in vars(capability).items() if callable(m) and n[0] != "_"]
        assert methods and set(methods) <= set(_documented()), (capability.__name__, methods)
        assert f"`{capability.__name__}`" in SECTION


def _shown(fn: Any, name: str) -> str:
    """`name(a, b, *, c)` as CONTRIBUTING writes a signature."""
    parts: list[str] = []
    for param_name, param in inspect.signature(fn).parameters.items():
        if param.kind is param.KEYWORD_ONLY and "*" not in parts:
            parts.append("*")
        parts.append(param_name)
    return f"`{name}({', '.join(p for p in parts if p != 'self')})`"


def test_the_helpers_are_documented_with_their_signatures() -> None:
    from orchestrate.core.api import httpapi, typedoptions

    for fn, name in (
        (httpapi.JsonApi, "JsonApi"),
        (httpapi.JsonApi.call, "call"),
        (httpapi.token_from, "token_from"),
        (typedoptions.options_from, "options_from"),
        (typedoptions.checked, "checked"),
        (typedoptions.checks_of, "checks_of"),
    ):
        assert _shown(fn, name) in DOC, _shown(fn, name)


def test_create_with_failover_is_documented_with_its_signature() -> None:
    params = inspect.signature(create_with_failover).parameters
    shown = ", ".join(
        f"*, {n}={p.default!r}" if p.kind is p.KEYWORD_ONLY else n for n, p in params.items()
    )
    assert f"`create_with_failover({shown}) -> InstanceRecord`" in DOC


def test_the_minimal_provider_in_contributing_runs_and_is_short() -> None:
    import dataclasses

    from orchestrate.core.api import provider as p

    start = DOC.index("### 9. A minimal provider")
    code = DOC[
        DOC.index("```python", start) + 9 : DOC.index("```", DOC.index("```python", start) + 9)
    ]
    assert len(code.strip().splitlines()) < 60
    import sys
    import types

    module = types.ModuleType("machines_example")  # dataclasses look their module up
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "CONTRIBUTING.md", "exec"), module.__dict__)  # the code as written
    finally:
        del sys.modules[module.__name__]
    provider: p.Provider = module.MachinesProvider()
    options = provider.validate_options({"hosts": ["192.0.2.1", "192.0.2.2"]}, "t")
    spec = p.LaunchSpec("nb", "machines", options, "ubuntu", "ssh-ed25519 AAAA k",
                        labels={p.NAME_LABEL: "nb"})  # fmt: skip
    record = create_with_failover(provider, spec, lambda *_: None)
    assert (record.address, record.status, record.ssh_user) == ("192.0.2.1", p.RUNNING, "ubuntu")
    found = provider.find(spec)
    assert found is not None and found.cloud_id == "192.0.2.1"
    second = create_with_failover(
        provider, dataclasses.replace(spec, name="b", labels={p.NAME_LABEL: "b"}), lambda *_: None
    )
    assert second.address == "192.0.2.2"
    assert provider.get(dataclasses.replace(record, options=options)).address == "192.0.2.1"
    provider.destroy(record)
    assert provider.find(spec) is None


def test_the_example_provider_fits_in_150_lines() -> None:
    """The contract is meant to be met in little code: the Linode example (provider and
    options; its registration hook, fake API and tests aside) must stay within 150 lines."""
    package = Path(__file__).resolve().parents[1] / "examples/orchestrate-linode/orchestrate_linode"
    counted = [f for f in package.glob("*.py") if f.name != "__init__.py"]
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in counted)
    assert counted and lines <= 150, lines
