"""The matcher's `Identity` built from the two shapes identity arrives in: a record's identity
(intake, convention 1) and an opt-out subject (optout, convention 2). Values are passed as
received; the matcher normalizes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiban_linkage.domain.matching import Identity


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def identity_of(fields: Mapping[str, Any]) -> Identity:
    """A record's identity or an opt-out subject (which has no address and no insurance
    numbers) as the matcher's `Identity`."""
    numbers = fields.get("insurance_numbers") or ()
    if isinstance(numbers, str):
        numbers = (numbers,)
    return Identity(
        family_name=_text(fields.get("family_name")),
        given_name=_text(fields.get("given_name")),
        family_name_kana=_text(fields.get("family_name_kana")),
        given_name_kana=_text(fields.get("given_name_kana")),
        birth_date=_text(fields.get("birth_date")),
        sex=_text(fields.get("sex")),
        postal_code=_text(fields.get("postal_code")),
        address=_text(fields.get("address")),
        insurance_numbers=tuple(t for n in numbers if (t := _text(n)) is not None),
        institution_patient_id=_text(fields.get("institution_patient_id")),
    )
