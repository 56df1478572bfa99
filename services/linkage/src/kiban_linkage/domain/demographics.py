"""The quasi-identifiers forwarded with a record (birth date, sex, postal code, death date):
never names, addresses or identifiers. Values that do not parse are dropped, not guessed."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from typing import Any

_SEXES = frozenset({"male", "female", "other", "unknown"})
_POSTAL = re.compile(r"^(\d{3})-?(\d{4})$")


def _iso_date(value: Any) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(unicodedata.normalize("NFKC", str(value)).strip()[:10])
    except ValueError:
        return None


def postal_code(value: Any) -> str | None:
    """`NNN-NNNN` from full-width digits, `〒`, spaces or a missing hyphen; else None."""
    if not value:
        return None
    text = unicodedata.normalize("NFKC", str(value))
    text = re.sub(r"[\s〒]", "", text).replace("‐", "-").replace("ー", "-").replace("−", "-")
    match = _POSTAL.fullmatch(text)
    return f"{match.group(1)}-{match.group(2)}" if match else None


def demographics(identity: Mapping[str, Any]) -> dict[str, Any]:
    """The `Demographics` fields of a record's identity (convention 1)."""
    sex = str(identity.get("sex") or "unknown").strip().lower()
    return {
        "birth_date": _iso_date(identity.get("birth_date")),
        "sex": sex if sex in _SEXES else "unknown",
        "postal_code": postal_code(identity.get("postal_code")),
        "deceased_on": _iso_date(identity.get("deceased_on")),
    }
