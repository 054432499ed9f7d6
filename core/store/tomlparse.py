"""TOML reading for profiles and the price file, with the parser imported on first use.

tomllib (3.11+, tomli before) costs a few milliseconds to import with its regular
expressions; `--help` reads no TOML and `status` usually none, so neither pays for it.
"""

from __future__ import annotations

import sys
from typing import Any


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error is a ValueError (tomllib's TOMLDecodeError)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10 only
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

    data: dict[str, Any] = tomllib.loads(text)
    return data
