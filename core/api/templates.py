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


def heredoc_delimiter(text: str, stem: str = "ORCHESTRATE_EOF") -> str:
    """A here-document delimiter that `text` cannot end early.

    A fixed delimiter can be closed by a value that contains it on a line of its own, and
    what follows then runs as shell. This one ends with a digest of the text itself, which
    no text can contain (it would have to contain its own hash); it is also checked. It is
    derived, not random, so a script stays the same for the same values (the setup hash of
    a host compares scripts).
    """
    import hashlib

    delimiter = f"{stem}_{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:20]}"
    if delimiter in text:  # pragma: no cover - a collision of the digest's first 80 bits
        raise ValueError("a here-document delimiter appears in the text it delimits")
    return delimiter
