"""Parsers for the structured identity fields: dates (ISO, slashes, YYYYMMDD, Japanese eras),
sex, postal codes, addresses and insurance numbers. Each returns None for what it cannot read;
none of them raises or echoes its input."""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache

import jaconv

from kiban_linkage.domain.matching._text import variant_table

__all__ = ["address", "birth_date", "insurance_number", "postal_code", "sex"]

# First Gregorian year of each era (year 1 = 元年). Abbreviations as printed on insurance cards
# and in EHR exports: M/T/S/H/R.
_ERAS = {
    "明治": 1868,
    "大正": 1912,
    "昭和": 1926,
    "平成": 1989,
    "令和": 2019,
    "M": 1868,
    "T": 1912,
    "S": 1926,
    "H": 1989,
    "R": 2019,
}
_ERA_DATE = re.compile(
    r"^(明治|大正|昭和|平成|令和|[MTSHR])\s*(元|\d{1,2})\s*(?:年|[./\-])\s*(\d{1,2})\s*(?:月|[./\-])"
    r"\s*(\d{1,2})\s*日?$"
)
_YMD = re.compile(r"^(\d{4})\s*(?:年|[./\-])\s*(\d{1,2})\s*(?:月|[./\-])\s*(\d{1,2})\s*日?")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def _valid(year: int, month: int, day: int) -> bool:
    # Calendar-loose on purpose: 1980-02-30 is a typo of a real date and still comparable.
    return 1850 <= year <= 2200 and 1 <= month <= 12 and 1 <= day <= 31


@lru_cache(maxsize=65536)
def birth_date(value: str | None) -> str | None:
    """ISO `YYYY-MM-DD` from ISO, `YYYY/M/D`, `YYYYMMDD`, `YYYY年M月D日` or an era date
    (`昭和55年1月2日`, `S55.1.2`, `平成元年1月8日`); a time part after ISO dates is ignored."""
    if not value:
        return None
    text = unicodedata.normalize("NFKC", value).strip().upper()
    if not text:
        return None
    match = _ERA_DATE.match(text)
    if match:
        era, year_text, month_text, day_text = match.groups()
        year = _ERAS[era] - 1 + (1 if year_text == "元" else int(year_text))
        month, day = int(month_text), int(day_text)
    else:
        match = _YMD.match(text) or _COMPACT.match(text.replace(" ", ""))
        if not match:
            return None
        year, month, day = (int(g) for g in match.groups())
    if not _valid(year, month, day):
        return None
    return f"{year:04d}-{month:02d}-{day:02d}"


_SEX = {
    "male": "m",
    "m": "m",
    "男": "m",
    "男性": "m",
    "1": "m",
    "female": "f",
    "f": "f",
    "女": "f",
    "女性": "f",
    "2": "f",
    "other": "o",
    "o": "o",
}


@lru_cache(maxsize=65536)
def sex(value: str | None) -> str | None:
    """`m`, `f`, `o`; None for unknown or missing (FHIR `unknown` is no evidence)."""
    if not value:
        return None
    return _SEX.get(unicodedata.normalize("NFKC", value).strip().casefold())


_DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=65536)
def postal_code(value: str | None) -> str | None:
    """Digits only: `〒１２３－４５６７`, `123-4567`, `1234567` → `1234567`. Other countries'
    codes (FEBRL's four digits) are kept as their digits; fewer than three digits is None."""
    if not value:
        return None
    digits = "".join(_DIGITS.findall(unicodedata.normalize("NFKC", value)))
    return digits if len(digits) >= 3 else None


_KANJI_DIGITS = str.maketrans("〇一二三四五六七八九", "0123456789")
# A block word after a number becomes one separator (`5丁目23番20号` → `5-23-20`); the
# look-behind replaces the word alone, which spares re-emitting the digits through a template.
_BLOCK_WORDS = re.compile(r"(?<=\d)\s*(?:丁目|番地|番|号|の)")
_KANJI_NUMBER = re.compile(r"([〇一二三四五六七八九十]+)(?=丁目|番地|番|号)")
_HAS_KANJI_NUMBER = re.compile(r"[〇一二三四五六七八九十]")
_ADDRESS_SPACES = re.compile(r"[\s\u3000,、。・.]+")
_ADDRESS_DASHES = re.compile(r"[\-‐－―ー−]+")


def _kanji_number(match: re.Match[str]) -> str:
    text = match.group(1)
    if text.count("十") == 1:  # 十, 二十, 二十三 (anything else: digits as written)
        tens, _, ones = text.partition("十")
        value = (int(tens.translate(_KANJI_DIGITS)) if tens else 1) * 10
        value += int(ones.translate(_KANJI_DIGITS)) if ones else 0
        return str(value)
    return text.translate(_KANJI_DIGITS)


@cache
def _address_translation() -> dict[int, str]:
    # variant kanji folded and hiragana made katakana in one pass (disjoint keys)
    return {**jaconv.jaconv.H2K_TABLE, **{ord(k): v for k, v in variant_table().items()}}


def address(value: str | None) -> str | None:
    """NFKC, variant kanji folded, kanji numerals before 丁目/番/号 as digits, 丁目/番地/番/号 and
    hyphens unified to one separator, spaces removed, case folded: `東京都千代田区一丁目２番３号`
    and `東京都千代田区1-2-3` compare equal."""
    if not value:
        return None
    if not unicodedata.is_normalized("NFKC", value):
        value = unicodedata.normalize("NFKC", value)
    text = value.translate(_address_translation()).casefold()
    if _HAS_KANJI_NUMBER.search(text):
        text = _KANJI_NUMBER.sub(_kanji_number, text)
    text = _BLOCK_WORDS.sub("-", text)
    text = _ADDRESS_SPACES.sub("", text)
    text = _ADDRESS_DASHES.sub("-", text).strip("-")
    return text or None


_INSURANCE_LABELS = re.compile(r"(保険者番号|記号|番号|枝番|NO|被保険者)", re.IGNORECASE)
_ALNUM = re.compile(r"[0-9A-Z]+")


_PLAIN_NUMBER = re.compile(r"[0-9]+(?:-[0-9]+)*")


def insurance_number(value: str | None) -> tuple[str, str | None] | None:
    """(number, household) of an insurance identifier.

    `06130017 記号:12 番号:345 枝番:01`, `06130017-12-345-01` and the same in full-width
    digits with ・ between the groups all give number `06130017-12-345-01`. The household
    form drops the two-digit 枝番 (branch, per insured person since 2021) so family members
    share it and twins can be told apart; it is None when there is no branch. Leading zeros
    of the 記号/番号 groups are kept: insurers print them consistently. Labels and
    punctuation are ignored. (Not cached: numbers are nearly unique per person.)"""
    if not value:
        return None
    if _PLAIN_NUMBER.fullmatch(value):  # already `digits-digits-...`: nothing to fold
        number = value
        groups = value.split("-")
    else:
        text = unicodedata.normalize("NFKC", value).upper()
        if "NO" in text or "被" in text:
            text = _INSURANCE_LABELS.sub(" ", text)
        # the kanji labels (記号, 番号, ...) are not [0-9A-Z]: they separate groups as they are
        groups = _ALNUM.findall(text)
        if not groups:
            return None
        number = "-".join(groups)
    household = None
    if len(groups) >= 4 and len(groups[-1]) == 2 and groups[-1].isdigit():
        household = number[: -len(groups[-1]) - 1]
    return number, household
