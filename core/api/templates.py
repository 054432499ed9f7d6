"""Filling `@NAME@` placeholders in host scripts, in one pass.

Chained `str.replace` calls expand a placeholder that a value itself contains (an image
named `x@CONTAINER@` would get the container name spliced in, unquoted, by the next call).
`fill` scans the template once: what a value brings in is never looked at again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with each `@KEY@` named in `values` replaced by its value.

    Keys are given with their at-signs (``{"@IMAGE@": ...}``); placeholders not in `values`
    stay as they are, so shell text such as an e-mail address is left alone. Values are used
    verbatim: quote them (`shlex.quote`) before they get here.
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(0), m.group(0)), template)
