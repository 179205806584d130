"""Phone numbers: masked for logs, checked against allow-lists."""

from __future__ import annotations

import re
from fnmatch import fnmatchcase

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def mask_number(number: str | None) -> str:
    """Enough to tell calls apart in a log, not enough to identify anyone."""
    return f"…{number[-4:]}" if number and len(number) > 4 else "?"


def allowed(number: str, patterns: tuple[str, ...]) -> bool:
    """An E.164 number matching one of the glob patterns ("+1555*"); none allows nothing."""
    return bool(E164.match(number)) and any(fnmatchcase(number, p) for p in patterns)
