"""Identity normalization for opt-out matching, the same rules the optout service applies.

Names: Unicode NFKC (half-width kana become full-width, full-width Latin becomes ASCII),
hiragana folded to katakana, every kind of space removed, Latin case folded. Dates: ISO
`YYYY-MM-DD`. Postal codes: the seven digits. Applied to both sides of a match (the patient as
submitted and the opt-out subject), so equal people meet in the blind index whatever form each
side was typed in.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

_HIRAGANA_START, _HIRAGANA_END = 0x3041, 0x3096
_KATAKANA_OFFSET = 0x60
_SPACES = re.compile(r"\s+")
_DIGITS = re.compile(r"\D")


def katakana(text: str) -> str:
    """Hiragana → katakana; everything else unchanged."""
    return "".join(
        chr(ord(c) + _KATAKANA_OFFSET) if _HIRAGANA_START <= ord(c) <= _HIRAGANA_END else c
        for c in text
    )


def normalize_name(value: object) -> str | None:
    """NFKC, katakana, no spaces, case folded; `None` for missing or blank values."""
    if not isinstance(value, str):
        return None
    text = _SPACES.sub("", katakana(unicodedata.normalize("NFKC", value))).casefold()
    return text or None


def normalize_postal_code(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    digits = _DIGITS.sub("", unicodedata.normalize("NFKC", value))
    return digits or None


def normalize_date(value: object) -> str | None:
    """The `YYYY-MM-DD` part of an ISO date or date-time."""
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip()
    return text[:10] if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", text) else None


def match_keys(identity: Mapping[str, Any]) -> list[str]:
    """The values a person is found by in the blind index: full kanji name + birth date and
    full kana name + birth date. A person without a birth date has no keys (a name alone
    matches too many people to stop anyone's data by it)."""
    birth = normalize_date(identity.get("birth_date"))
    if birth is None:
        return []
    keys: list[str] = []
    for kind, family, given in (
        ("name", "family_name", "given_name"),
        ("kana", "family_name_kana", "given_name_kana"),
    ):
        f, g = normalize_name(identity.get(family)), normalize_name(identity.get(given))
        if f and g:
            keys.append(f"{kind}\x1f{f}{g}\x1f{birth}")
    return keys
