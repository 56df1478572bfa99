"""The person a request is about, normalized, and the rules that read it.

A `Subject` is built from what a caller sent (a request body or a token's verified claims);
building it validates and normalizes every field, so two writings of one person give equal
subjects and an equal `identity()` (the text the blind index is computed over).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any

from kiban_optout.domain import normalize

# The fields that identify a person: every request must give all of them.
IDENTITY_FIELDS = (
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "birth_date",
    "sex",
)
OPTIONAL_FIELDS = ("postal_code", "institution_patient_id", "deceased_on")
# Verified OIDC claims of a patient's token → subject fields.
CLAIMS = {
    "family_name": "family_name",
    "given_name": "given_name",
    "family_name_kana": "family_name_kana",
    "given_name_kana": "given_name_kana",
    "birthdate": "birth_date",
    "gender": "sex",
}


class SubjectError(ValueError):
    """A subject field is missing or invalid. `field` names it; the message never holds the
    value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"subject.{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Subject:
    family_name: str
    given_name: str
    family_name_kana: str
    given_name_kana: str
    birth_date: date
    sex: str
    postal_code: str | None = None
    institution_patient_id: str | None = None
    deceased_on: date | None = None

    def identity(self) -> str:
        """The identifying fields joined in a fixed order: what duplicates are found by."""
        return "\x1f".join(
            [
                self.family_name,
                self.given_name,
                self.family_name_kana,
                self.given_name_kana,
                self.birth_date.isoformat(),
                self.sex,
            ]
        )

    def as_dict(self) -> dict[str, Any]:
        """The subject as JSON-ready data (convention 2: every field, missing ones null)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # flat: no deep copy
        data["birth_date"] = self.birth_date.isoformat()
        data["deceased_on"] = self.deceased_on.isoformat() if self.deceased_on else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Subject:
        """Read back `as_dict()` output (already normalized)."""
        deceased = data.get("deceased_on")
        return cls(
            family_name=data["family_name"],
            given_name=data["given_name"],
            family_name_kana=data["family_name_kana"],
            given_name_kana=data["given_name_kana"],
            birth_date=date.fromisoformat(data["birth_date"]),
            sex=data["sex"],
            postal_code=data.get("postal_code"),
            institution_patient_id=data.get("institution_patient_id"),
            deceased_on=date.fromisoformat(deceased) if deceased else None,
        )

    def with_hints(self, other: Subject) -> Subject:
        """This subject plus the optional fields `other` has and this one lacks."""
        return Subject(
            **{
                **asdict(self),
                "postal_code": self.postal_code or other.postal_code,
                "institution_patient_id": self.institution_patient_id
                or other.institution_patient_id,
                "deceased_on": self.deceased_on or other.deceased_on,
            }
        )


_NORMALIZERS: dict[str, Callable[[str], Any]] = {
    "family_name": normalize.name,
    "given_name": normalize.name,
    "family_name_kana": normalize.kana,
    "given_name_kana": normalize.kana,
    "birth_date": normalize.parse_date,
    "sex": normalize.sex,
    "postal_code": normalize.postal_code,
    "institution_patient_id": normalize.patient_id,
    "deceased_on": normalize.parse_date,
}


def normalized_fields(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize the fields present in `raw` (absent or null ones are left out)."""
    out: dict[str, Any] = {}
    for field, normalizer in _NORMALIZERS.items():
        value = raw.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise SubjectError(field, "must be a string")
        try:
            out[field] = normalizer(value)
        except ValueError as exc:
            raise SubjectError(field, str(exc)) from None
    return out


def parse_subject(raw: Mapping[str, Any], *, today: date) -> Subject:
    """A complete, valid subject from a request body (or from claims mapped by `CLAIMS`)."""
    fields = normalized_fields(raw)
    for field in IDENTITY_FIELDS:
        if field not in fields:
            raise SubjectError(field, "is required")
    subject = Subject(**fields)
    check_dates(subject, today=today)
    return subject


def check_dates(subject: Subject, *, today: date) -> None:
    if subject.birth_date > today:
        raise SubjectError("birth_date", "is in the future")
    if subject.deceased_on is not None:
        if subject.deceased_on > today:
            raise SubjectError("deceased_on", "is in the future")
        if subject.deceased_on < subject.birth_date:
            raise SubjectError("deceased_on", "is before the birth date")


def claims_subject(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The raw subject fields a patient token's claims carry (by subject field name)."""
    return {field: claims[claim] for claim, field in CLAIMS.items() if claim in claims}


def missing_claims(claims: Mapping[str, Any]) -> list[str]:
    return [claim for claim in CLAIMS if not claims.get(claim)]


def disagreeing_fields(reference: Subject, given: Mapping[str, Any]) -> list[str]:
    """Identity fields present in `given` (already normalized) that differ from `reference`."""
    ref = asdict(reference)
    return [f for f in IDENTITY_FIELDS if f in given and given[f] != ref[f]]


def age_on(birth: date, day: date) -> int:
    """Completed years on `day` (one reaches an age on the birthday; 29 Feb → 1 Mar)."""
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
