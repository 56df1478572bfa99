"""Normalization of the identity fields a person gives: the same person written two ways must
come out the same, because the result is both the blind index that finds duplicates and what
linkage matches on.

- Text: Unicode NFKC (full-width ASCII and digits → half-width, half-width katakana →
  full-width, ideographic space → space), then every whitespace removed.
- Kana fields: hiragana → katakana (`jaconv.hira2kata`); only katakana, the long-vowel mark and
  the middle dot are accepted afterwards.
- Dates: ISO `YYYY-MM-DD`, `YYYYMMDD`, `YYYY/M/D`, `YYYY.M.D`, `YYYY年M月D日` and Japanese era
  dates (`昭和55年1月2日`, `平成元年5月1日`, `S55.1.2`, `H1/5/1`), checked against the era's first
  and last day.
- Sex: `male|female|other|unknown` (any case), also `男`, `女`, `男性`, `女性`, `M`, `F`.
- Postal code: seven digits (a leading `〒` and hyphens of any width allowed) → `NNN-NNNN`.

Functions raise `ValueError` with a message that never contains the value.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date

import jaconv

_WHITESPACE = re.compile(r"\s+")
_KATAKANA = re.compile(r"^[\u30a1-\u30fa\u30fc\u30fd\u30fe\u30fb]+$")
# Dashes people type for the long vowel in kana (after NFKC): hyphen, minus, dashes, wave dash.
_KANA_DASHES = str.maketrans(dict.fromkeys("-‐‑‒–—―−～〜~", "ー"))
_MAX_NAME = 100

# Era, first day (元年), last day. Meiji starts with the solar calendar (明治6年 = 1873).
_ERAS: dict[str, tuple[date, date | None]] = {
    "明治": (date(1868, 1, 25), date(1912, 7, 29)),
    "大正": (date(1912, 7, 30), date(1926, 12, 24)),
    "昭和": (date(1926, 12, 25), date(1989, 1, 7)),
    "平成": (date(1989, 1, 8), date(2019, 4, 30)),
    "令和": (date(2019, 5, 1), None),
}
_ERA_LETTERS = {"M": "明治", "T": "大正", "S": "昭和", "H": "平成", "R": "令和"}
_ERA_DATE = re.compile(
    r"^(明治|大正|昭和|平成|令和|[MTSHRmtshr])(元|\d{1,2})(?:年|[./-])(\d{1,2})(?:月|[./-])(\d{1,2})日?$"
)
_WESTERN_DATE = re.compile(r"^(\d{4})(?:年|[./-])(\d{1,2})(?:月|[./-])(\d{1,2})日?$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")

_SEXES = {
    "male": "male",
    "m": "male",
    "男": "male",
    "男性": "male",
    "female": "female",
    "f": "female",
    "女": "female",
    "女性": "female",
    "other": "other",
    "その他": "other",
    "unknown": "unknown",
    "不明": "unknown",
}
_POSTAL_DASHES = str.maketrans(dict.fromkeys("‐‑‒–—―−ー", "-"))
_POSTAL = re.compile(r"^(\d{3})-?(\d{4})$")
_PATIENT_ID = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")


def fold(value: str) -> str:
    """NFKC with every whitespace removed (spaces inside names carry no identity)."""
    return _WHITESPACE.sub("", unicodedata.normalize("NFKC", value))


def name(value: str) -> str:
    """A name written in kanji (or any script): NFKC, no spaces."""
    folded = fold(value)
    if not folded:
        raise ValueError("is empty")
    if len(folded) > _MAX_NAME:
        raise ValueError(f"is longer than {_MAX_NAME} characters")
    if not all(ch.isprintable() for ch in folded):
        raise ValueError("contains control characters")
    return folded


def kana(value: str) -> str:
    """A name in kana: NFKC, no spaces, hiragana → katakana, katakana only."""
    folded = jaconv.hira2kata(name(value)).translate(_KANA_DASHES)
    if not _KATAKANA.match(folded):
        raise ValueError("must be written in kana")
    return folded


def parse_date(value: str) -> date:
    """A calendar date in any of the accepted forms (see the module docstring)."""
    text = fold(value)
    era = _ERA_DATE.match(text)
    if era:
        return _era_date(era.group(1), era.group(2), int(era.group(3)), int(era.group(4)))
    match = _WESTERN_DATE.match(text) or _COMPACT_DATE.match(text)
    if not match:
        raise ValueError("is not a date (use YYYY-MM-DD, YYYY/MM/DD or a Japanese era date)")
    return _date(int(match.group(1)), int(match.group(2)), int(match.group(3)))


def _era_date(era: str, year_text: str, month: int, day: int) -> date:
    name_ = _ERA_LETTERS.get(era.upper(), era)
    first, last = _ERAS[name_]
    year = 1 if year_text == "元" else int(year_text)
    if year < 1:
        raise ValueError("has an era year below 1")
    result = _date(first.year + year - 1, month, day)
    if result < first or (last is not None and result > last):
        raise ValueError("is outside its era")
    return result


def _date(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise ValueError("is not a valid calendar date") from None


def sex(value: str) -> str:
    folded = fold(value)
    result = _SEXES.get(folded.lower())
    if result is None:
        raise ValueError("must be one of male, female, other, unknown")
    return result


def postal_code(value: str) -> str:
    folded = fold(value).removeprefix("〒").translate(_POSTAL_DASHES)
    match = _POSTAL.match(folded)
    if not match:
        raise ValueError("must be seven digits (NNN-NNNN)")
    return f"{match.group(1)}-{match.group(2)}"


def patient_id(value: str) -> str:
    folded = fold(value)
    if not _PATIENT_ID.match(folded):
        raise ValueError("must be 1 to 64 letters, digits or . _ : / -")
    return folded
