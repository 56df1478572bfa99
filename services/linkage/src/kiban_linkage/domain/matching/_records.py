"""Building an Identity from a mapping (an event's identity dict, a CSV row)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiban_linkage.domain.matching._identity import Identity

__all__ = ["IDENTITY_FIELDS", "identity_from_mapping"]

IDENTITY_FIELDS = (
    "family_name",
    "given_name",
    "family_name_kana",
    "given_name_kana",
    "birth_date",
    "sex",
    "postal_code",
    "address",
    "insurance_number",
)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def identity_from_mapping(data: Mapping[str, Any]) -> Identity:
    """Identity from the record-received identity dict (convention 1) or a CSV row mapped to
    the `kiban link` field names. `insurance_numbers` may be a list; `insurance_number` a single
    value (or several separated by `|` or `;`). Unknown keys are ignored."""
    numbers: list[str] = []
    listed = data.get("insurance_numbers")
    if isinstance(listed, str):
        listed = [listed]
    if isinstance(listed, list | tuple):
        numbers.extend(t for t in (_text(v) for v in listed) if t)
    single = _text(data.get("insurance_number"))
    if single:
        numbers.extend(p.strip() for p in single.replace(";", "|").split("|") if p.strip())
    return Identity(
        family_name=_text(data.get("family_name")),
        given_name=_text(data.get("given_name")),
        family_name_kana=_text(data.get("family_name_kana")),
        given_name_kana=_text(data.get("given_name_kana")),
        birth_date=_text(data.get("birth_date")),
        sex=_text(data.get("sex")),
        postal_code=_text(data.get("postal_code")),
        address=_text(data.get("address")),
        insurance_numbers=tuple(numbers),
        institution_patient_id=_text(data.get("institution_patient_id")),
    )
