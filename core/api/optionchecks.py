"""Checkers for a provider's profile sub-table: one value, one `where`, one clear error.

Providers validate their own keys (`Provider.validate_options`); these are the small pieces
every provider needs, shared so that each error reads the same whatever the cloud: what
was expected, what was found, and where (`where` names file, line and key).

A `Check` takes the raw TOML value and `where`, and returns the typed value or raises
`ProfileError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from orchestrate.core.api.errors import ProfileError

Check = Callable[[Any, str], Any]


class Where(str):
    """The `where` of a provider sub-table ("orchestrate.toml:12: [profiles.gpu.x]") that
    also knows the line of each key in it, so an error points at the key, not the header.

    It is a `str`, so a provider that formats `where` itself keeps working; `line_of` and
    `at` use the key's line when core passed a `Where`.
    """

    keys: dict[str, str]

    def __new__(cls, text: str, keys: Mapping[str, str] | None = None) -> Where:
        made = super().__new__(cls, text)
        made.keys = dict(keys or {})
        return made


def line_of(where: str, key: str) -> str:
    """`where` with the line of `key` when it is known: the prefix of a one-line error."""
    if isinstance(where, Where):
        return where.keys.get(key, str(where))
    return where


def at(where: str, key: str) -> str:
    """`where` of one key, "orchestrate.toml:14: [profiles.gpu.x]: region", for the checks."""
    return f"{line_of(where, key)}: {key}"


def kind_name(value: Any) -> str:
    """TOML's name for a value's type, as a user who wrote the file knows it."""
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


def string(pattern: re.Pattern[str] | None = None, what: str = "") -> Check:
    """A string, optionally matching `pattern` (described to the user as `what`)."""

    def check(value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise ProfileError(f"{where} must be a string, not {kind_name(value)} {value!r}")
        if pattern is not None and not pattern.match(value):
            raise ProfileError(f"{where}: {value!r} is not {what}")
        return value

    return check


def integer(low: int, high: int) -> Check:
    """An integer in [low, high]; TOML booleans are not integers here."""

    def check(value: Any, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProfileError(f"{where} must be an integer, not {kind_name(value)} {value!r}")
        if not low <= value <= high:
            raise ProfileError(f"{where} must be between {low} and {high}, not {value}")
        return value

    return check


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProfileError(f"{where} must be true or false, not {kind_name(value)} {value!r}")
    return value


def string_list(item: Check) -> Check:
    """An array whose entries each pass `item`; errors name the entry's index."""

    def check(value: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise ProfileError(f"{where} must be an array of strings, not {kind_name(value)}")
        return tuple(item(entry, f"{where}[{index}]") for index, entry in enumerate(value))

    return check


def is_loopback(host: str) -> bool:
    """`host` names this machine only: localhost or a loopback address."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def endpoint(value: Any, where: str) -> str:
    """An API base URL override (an emulator, a fake on loopback): scheme://host[:port].

    https only, except on loopback: the endpoint receives the credentials' tokens (a GCP
    refresh token is exchanged there), and plain http would show them to the network.
    """
    text = str(string()(value, where))
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ProfileError(f"{where}: {text!r} must be scheme://host[:port] with no path")
    if any(c in text for c in "@?#") or any(ord(c) <= 32 or ord(c) >= 127 for c in text):
        raise ProfileError(f"{where}: {text!r} must be scheme://host[:port] with no path")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ProfileError(f"{where}: {text!r} has a bad port") from None
    if parts.scheme != "https" and not is_loopback(parts.hostname):
        raise ProfileError(
            f"{where}: {text!r} must use https (plain http only on loopback)",
            hint="write https://...; tokens are sent to this endpoint",
        )
    return text.rstrip("/")


def check_table(
    table: Mapping[str, Any], checks: Mapping[str, Check], where: str
) -> dict[str, Any]:
    """Every key of `table` through its check; an unknown key is refused with a close match
    (same first four letters) or the list of known keys."""
    values: dict[str, Any] = {}
    for key, raw in table.items():
        check = checks.get(key)
        if check is None:
            known = tuple(checks)
            close = [k for k in known if k[:4] == key[:4]]
            raise ProfileError(
                f"{line_of(where, key)}: unknown key {key!r}",
                hint=f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}",
            )
        values[key] = check(raw, at(where, key))
    return values


def merge_zones(values: dict[str, Any], where: str) -> None:
    """`zone = "z"` is shorthand for `zones = ["z"]`; both at once, or a zone listed twice,
    is refused. Rewrites `values` in place."""
    if "zone" in values and "zones" in values:
        raise ProfileError(f"{where}: set zone or zones, not both")
    if "zone" in values:
        values["zones"] = (values.pop("zone"),)
    zones = values.get("zones", ())
    if len(set(zones)) != len(zones):
        raise ProfileError(f"{where}: zones lists a zone twice")
