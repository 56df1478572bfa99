"""Numbers of the public register of approvals (RULES.md 19).

An approval gets `<year>-<seq>`: the calendar year of the approval date and a sequence that
starts at 1 each year, four digits at least (`2026-0001`, `2026-0002`, ..., `2027-0001`).
"""

from __future__ import annotations


def approval_number(year: int, seq: int) -> str:
    return f"{year}-{seq:04d}"
