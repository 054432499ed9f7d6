"""A provider's `validate_options`, derived from its options dataclass.

Why: every provider wrote the same loop (unknown keys, a type check per key, defaults) and
each wrote its errors a little differently. Declaring the options once, as a frozen
dataclass, gives the checks, the defaults and the one-line errors that name the key's own
file and line (`optionchecks.at`):

    @dataclass(frozen=True)
    class MyOptions:
        region: str = checked("r1", string(REGION, "a region such as r1"))
        plan: Literal["gpu-1", "gpu-2"] = "gpu-1"
        ssh_port: int = 22
        credentials: str | None = None

    options = options_from(MyOptions, table, where)

A field's type gives its check (`str`, `int`, `float`, `bool`, a `Literal` of strings,
`tuple[str, ...]`, any of them `| None`); `checked(default, check)` replaces it with an
`optionchecks` checker. A field without a default is a required key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from orchestrate.core.api import optionchecks as oc
from orchestrate.core.api.errors import ProfileError

T = TypeVar("T")
CHECK = "orchestrate.check"


def checked(default: Any, check: oc.Check) -> Any:
    """A dataclass field whose value goes through `check` (an `optionchecks` checker)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("a mutable default needs a tuple")
    return dataclasses.field(default=default, metadata={CHECK: check})


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{where} must be a number, not {oc.kind_name(value)} {value!r}")
    return float(value)


def _choice(choices: tuple[Any, ...]) -> oc.Check:
    def check(value: Any, where: str) -> Any:
        if value not in choices or isinstance(value, bool):
            raise ProfileError(
                f"{where}: {value!r} is not one of {', '.join(repr(c) for c in choices)}"
            )
        return value

    return check


def check_for(hint: Any) -> oc.Check:
    """The checker a field's type implies."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:  # TOML cannot write None: only the default is None
            return check_for(rest[0])
    if origin is typing.Literal:
        return _choice(args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return oc.string_list(check_for(args[0]))
    simple: dict[Any, oc.Check] = {
        str: oc.string(),
        int: oc.integer(-(2**63), 2**63 - 1),
        bool: oc.boolean,
        float: _number,
    }
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no check for a field of type {hint!r}: give it checked(default, check)")


def checks_of(cls: type[Any]) -> dict[str, oc.Check]:
    """Each field's checker, by key: its own `checked` one, else its type's."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: f.metadata.get(CHECK) or check_for(hints[f.name])
        for f in dataclasses.fields(cls)
        if f.init
    }


def options_from(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """`table` checked against the dataclass `cls` and returned as one, defaults filled.

    Errors are `ProfileError`s naming the key's file and line; an unknown key gets a close
    match or the known keys; a required key that is missing is named with the table.
    """
    values = oc.check_table(table, checks_of(cls), where)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.init and missing and f.name not in values:
            raise ProfileError(f"{where}: missing key {f.name!r}", hint=f"set {f.name} = ...")
    return cls(**values)
