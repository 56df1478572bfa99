"""Whether an organization is a certified user (認定利活用者) on a given day.

A certification is valid from `certified_on` through `expires_on`, both days included: the
expiry date is the last day of validity (有効期限), so an application made on that day is still
accepted and one made the next day is refused. Days are days of the committee's calendar.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class CertificationState(StrEnum):
    VALID = "valid"
    NOT_CERTIFIED = "not_certified"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Certification:
    certified_on: date
    expires_on: date

    def covers(self, day: date) -> bool:
        return self.certified_on <= day <= self.expires_on


def certification_state(certifications: Iterable[Certification], day: date) -> CertificationState:
    """VALID if any certification covers `day`; otherwise why not (the most telling reason:
    an expired one, then one that starts later, then none at all)."""
    found = list(certifications)
    if any(c.covers(day) for c in found):
        return CertificationState.VALID
    if any(c.expires_on < day for c in found):
        return CertificationState.EXPIRED
    if found:
        return CertificationState.NOT_YET_VALID
    return CertificationState.NOT_CERTIFIED


MESSAGES = {
    CertificationState.NOT_CERTIFIED: (
        "organization: a pseudonymized dataset is only for certified users, and this "
        "organization is not certified"
    ),
    CertificationState.NOT_YET_VALID: (
        "organization: the organization's certification as a user is not valid yet"
    ),
    CertificationState.EXPIRED: (
        "organization: the organization's certification as a user has expired"
    ),
}
