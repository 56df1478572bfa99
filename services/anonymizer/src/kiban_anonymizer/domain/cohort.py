"""Which persons a dataset covers: condition code patterns and a period."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date


def normalize_code(code: str) -> str:
    """Codes compare without dots and case: `I50.0`, `i500` and `I500` are one code."""
    return code.replace(".", "").replace(" ", "").upper()


def code_matches(code: str, patterns: Sequence[str]) -> bool:
    """`I50*` matches every code starting with I50; a pattern without `*` matches exactly."""
    value = normalize_code(code)
    for pattern in patterns:
        p = normalize_code(pattern)
        if p.endswith("*"):
            if value.startswith(p[:-1]):
                return True
        elif value == p:
            return True
    return False


def in_period(day: date | None, start: date | None, end: date | None) -> bool:
    """A dated row inside [start, end]; an undated row counts as inside (it cannot be placed)."""
    if day is None:
        return True
    return (start is None or day >= start) and (end is None or day <= end)
