"""The generalization hierarchies that ship with the service, as ARX-style rows.

Every hierarchy is a list of rows `[value, level 1, level 2, ..., "*"]`, one row per value that
occurs, all rows of one hierarchy the same length (ARX's format, `;`-separated in files). The
labels are what a released file shows, so they are readable on their own ("40-44", "2021",
"Tokyo"). Reference tables (ICD-10 blocks and chapters, postal prefix → prefecture) are package
data in `kiban_anonymizer.hierarchies` with their sources.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources

UNKNOWN = "unknown"
TOP = "*"
AGE_TOP_CODE = 90  # ages at or above are one value, "90+" (top-coding)


def age_at(birth: date | None, reference: date) -> str:
    """Whole years at `reference`, top-coded at 90; "unknown" without a birth date."""
    if birth is None:
        return UNKNOWN
    years = (
        reference.year - birth.year - ((reference.month, reference.day) < (birth.month, birth.day))
    )
    if years >= AGE_TOP_CODE:
        return f"{AGE_TOP_CODE}+"
    return str(max(years, 0))


def _band(age: int, width: int) -> str:
    low = age // width * width
    high = min(low + width - 1, AGE_TOP_CODE - 1)
    return f"{low}-{high}"


def age_rows(values: Iterable[str]) -> list[list[str]]:
    """age → 5-year band → 10-year band → 20-year band → *; "90+" stays itself up to *."""
    rows = []
    for value in sorted(set(values)):
        if value == UNKNOWN or value.endswith("+"):
            rows.append([value, value, value, value, TOP])
        else:
            age = int(value)
            rows.append([value, _band(age, 5), _band(age, 10), _band(age, 20), TOP])
    return rows


def sex_rows(values: Iterable[str]) -> list[list[str]]:
    return [[value, TOP] for value in sorted(set(values))]


def month_rows(values: Iterable[str]) -> list[list[str]]:
    """YYYY-MM → YYYY → 5-year span (YYYY-YYYY) → *."""
    rows = []
    for value in sorted(set(values)):
        if value == UNKNOWN:
            rows.append([value, value, value, TOP])
        else:
            rows.append([value, value[:4], year_span(int(value[:4])), TOP])
    return rows


def year_rows(values: Iterable[str]) -> list[list[str]]:
    """YYYY → 5-year span → *."""
    rows = []
    for value in sorted(set(values)):
        if value == UNKNOWN:
            rows.append([value, value, TOP])
        else:
            rows.append([value, year_span(int(value)), TOP])
    return rows


def year_span(year: int) -> str:
    low = year // 5 * 5
    return f"{low}-{low + 4}"


@dataclass(frozen=True, slots=True)
class Prefecture:
    jis_code: str
    name: str
    region: str


@cache
def _postal_table() -> list[tuple[str, str, Prefecture]]:
    text = resources.files("kiban_anonymizer.hierarchies").joinpath("postal_prefecture.csv")
    with text.open(encoding="utf-8") as f:
        return [
            (r["first"], r["last"], Prefecture(r["jis_code"], r["prefecture"], r["region"]))
            for r in csv.DictReader(f)
        ]


def prefecture(postal_code: str) -> Prefecture | None:
    prefix = postal_code[:3]
    for first, last, pref in _postal_table():
        if first <= prefix <= last:
            return pref
    return None


def postal_rows(values: Iterable[str]) -> list[list[str]]:
    """postal code (7 digits) → first 3 digits → prefecture → region → *."""
    rows = []
    for value in sorted(set(values)):
        pref = prefecture(value) if value != UNKNOWN else None
        if pref is None:
            rows.append([value, UNKNOWN, UNKNOWN, UNKNOWN, TOP])
        else:
            rows.append([value, value[:3], pref.name, pref.region, TOP])
    return rows


def postal_area(postal_code: str | None) -> str:
    """The postal area a dataset starts from: the first 3 digits (never the full code)."""
    if postal_code and prefecture(postal_code) is not None:
        return postal_code[:3]
    return UNKNOWN


def postal_area_rows(values: Iterable[str]) -> list[list[str]]:
    """postal area (3 digits) → prefecture → region → * (the upper part of `postal_rows`)."""
    return [row[1:] for row in postal_rows(values)]


@cache
def _icd10_tables() -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    package = resources.files("kiban_anonymizer.hierarchies")
    tables = []
    for name, label in (("icd10_blocks.csv", "block"), ("icd10_chapters.csv", "chapter")):
        with package.joinpath(name).open(encoding="utf-8") as f:
            tables.append([(r["first"], r["last"], r[label]) for r in csv.DictReader(f)])
    return tables[0], tables[1]


def _lookup(category: str, table: list[tuple[str, str, str]]) -> str | None:
    for first, last, label in table:
        if first <= category <= last:
            return label
    return None


def icd10_category(code: str) -> str:
    return code.replace(".", "")[:3].upper()


def icd10_levels(code: str) -> list[str]:
    """ICD-10 code → 3-character category → block (e.g. I30-I52) → chapter (e.g. IX) → *."""
    category = icd10_category(code)
    blocks, chapters = _icd10_tables()
    block = _lookup(category, blocks)
    chapter = _lookup(category, chapters)
    if chapter is None:
        return [code, TOP, TOP, TOP, TOP]
    return [code, category, block or f"chapter {chapter}", f"chapter {chapter}", TOP]


def icd10_rows(values: Iterable[str]) -> list[list[str]]:
    return [icd10_levels(value) for value in sorted(set(values))]
