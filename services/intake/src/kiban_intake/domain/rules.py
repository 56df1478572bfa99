"""The collection rules (RULES.md 1–4): notice, waiting period, minors, deceased persons.

`decide` is the one place that says whether a patient's records may be provided today. It is
called when records arrive, when a notice is recorded and again by the scheduler just before
held records are released, so a rule that starts to apply in between (a minor turning 16)
is never skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

ADULT_AGE = 16  # RULES.md 3: from 16 the patient decides and must be notified themselves

Status = Literal["accepted", "held", "rejected"]

# Reasons, stable and machine-readable (they appear in submission outcomes).
NO_NOTICE = "no_notice"
GUARDIAN_NOT_NOTIFIED = "guardian_not_notified"
OPTED_OUT = "opted_out"
NOTICE_PERIOD = "notice_period"
RENEWED_NOTICE_REQUIRED = "renewed_notice_required"


@dataclass(frozen=True, slots=True)
class Notice:
    notified_on: date
    guardian_notified: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    status: Status
    reason: str | None = None
    eligible_on: date | None = None


def age_on(birth_date: date, day: date) -> int:
    """Completed years on `day`."""
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def turns_adult_on(birth_date: date) -> date:
    """The 16th birthday (29 February → 1 March in a common year)."""
    try:
        return birth_date.replace(year=birth_date.year + ADULT_AGE)
    except ValueError:
        return date(birth_date.year + ADULT_AGE, 3, 1)


def _valid(notices: Iterable[Notice], birth_date: date | None) -> list[Notice]:
    """Notices that count: one given to a child under 16 counts only if the guardian was
    notified too. Without a birth date every notice counts (nothing shows a minor)."""
    return [
        n
        for n in notices
        if birth_date is None
        or n.guardian_notified
        or age_on(birth_date, n.notified_on) >= ADULT_AGE
    ]


def _adult_now(birth_date: date | None, deceased_on: date | None, today: date) -> bool:
    if birth_date is None:
        return True
    reference = min(today, deceased_on) if deceased_on else today  # age at death stays fixed
    return age_on(birth_date, reference) >= ADULT_AGE


def decide(
    *,
    notices: Iterable[Notice],
    birth_date: date | None,
    deceased_on: date | None,
    today: date,
    period_days: int,
    opted_out: bool,
) -> Decision:
    """accepted, held (with `eligible_on` when a date is known) or rejected, with a reason."""
    if opted_out:
        return Decision("rejected", OPTED_OUT)
    notices = list(notices)
    if not notices:
        return Decision("rejected", NO_NOTICE)
    valid = _valid(notices, birth_date)
    if not valid:
        return Decision("rejected", GUARDIAN_NOT_NOTIFIED)
    governing = min(valid, key=lambda n: n.notified_on)
    if birth_date is not None and _adult_now(birth_date, deceased_on, today):
        renewed = [n for n in valid if age_on(birth_date, n.notified_on) >= ADULT_AGE]
        if not renewed:
            return Decision("held", RENEWED_NOTICE_REQUIRED)
        governing = min(renewed, key=lambda n: n.notified_on)
    eligible_on = governing.notified_on + timedelta(days=period_days)
    if today < eligible_on:
        return Decision("held", NOTICE_PERIOD, eligible_on)
    return Decision("accepted", None, eligible_on)


def renewal_due(
    notices: Iterable[Notice], birth_date: date | None, deceased_on: date | None, today: date
) -> bool:
    """Notified (validly) only as a child and 16 or older now: a renewed notice is due."""
    if birth_date is None or not _adult_now(birth_date, deceased_on, today):
        return False
    valid = _valid(notices, birth_date)
    return bool(valid) and all(age_on(birth_date, n.notified_on) < ADULT_AGE for n in valid)
