"""Comparison levels of a pair of normalized identities (one scalar path for the service's
incremental matching, one vectorized path for batches; a test checks they agree).

A comparison vector has one level per field; -1 means "missing on either side" (no evidence).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Indel, JaroWinkler, Levenshtein

from kiban_linkage.domain.matching._identity import Normalized

__all__ = ["FIELDS", "LEVELS", "Comparison", "compare"]


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]


NAME_LEVELS = (
    "exact",
    "normalized-equal",
    "kana-equal",
    "kana-folded-equal",
    "similar>=0.92",
    "similar>=0.80",
    "different",
    "different-reading",  # both readings known and different: another name, not a typo
)
COMPARISONS = (
    Comparison("family_name", NAME_LEVELS),
    Comparison("given_name", NAME_LEVELS),
    Comparison(
        "birth_date",
        ("exact", "day-month-swapped", "one-digit-error", "two-of-three-parts", "different"),
    ),
    Comparison("sex", ("equal", "different")),
    Comparison("postal_code", ("exact", "same-area", "different")),
    Comparison("address", ("exact", "same-numbers-similar>=0.80", "similar>=0.80", "different")),
    Comparison("insurance", ("shared-number", "same-household", "one-edit", "different")),
)
FIELDS = tuple(c.name for c in COMPARISONS)
LEVELS = {c.name: c.levels for c in COMPARISONS}
FAMILY, GIVEN, DOB, SEX, POSTAL, ADDRESS, INSURANCE = range(len(FIELDS))

NAME_HIGH, NAME_MID = 0.92, 0.80
# Family and given names entered in each other's fields: when both compare at SWAP_FROM or
# worse, the crossed comparison is used if both crossed levels are SWAP_TO or better.
SWAP_FROM, SWAP_TO = 5, 4
# Addresses: the house numbers decide. Two addresses in one 町 with different 番地 are similar
# strings but different homes; a typo or another format keeps the numbers.
ADDRESS_SIMILAR = 0.80
_NUMBERS = re.compile(r"\d+")


def address_numbers(address: str) -> str:
    return "-".join(_NUMBERS.findall(address))


def name_similarity(
    norm_a: str | None, norm_b: str | None, kana_a: str | None, kana_b: str | None
) -> float:
    best = 0.0
    if norm_a is not None and norm_b is not None:
        best = JaroWinkler.normalized_similarity(norm_a, norm_b)
    if kana_a is not None and kana_b is not None:
        best = max(best, JaroWinkler.normalized_similarity(kana_a, kana_b))
    return best


def name_level(
    exact: tuple[str | None, str | None],
    norm: tuple[str | None, str | None],
    kana: tuple[str | None, str | None],
    fold: tuple[str | None, str | None],
) -> int:
    has_norm = norm[0] is not None and norm[1] is not None
    has_kana = kana[0] is not None and kana[1] is not None
    if not has_norm and not has_kana:
        return -1
    if exact[0] is not None and exact[0] == exact[1]:
        return 0
    if has_norm and norm[0] == norm[1]:
        return 1
    if has_kana and kana[0] == kana[1]:
        return 2
    if fold[0] is not None and fold[0] == fold[1]:
        return 3
    sim = name_similarity(norm[0], norm[1], kana[0], kana[1])
    return 4 if sim >= NAME_HIGH else 5 if sim >= NAME_MID else 7 if has_kana else 6


def date_parts(iso: str | None) -> tuple[int, int, int] | None:
    if iso is None:
        return None
    return int(iso[0:4]), int(iso[5:7]), int(iso[8:10])


def date_level(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return -1
    if a == b:
        return 0
    pa, pb = date_parts(a), date_parts(b)
    assert pa is not None
    assert pb is not None
    ya, ma, da = pa
    yb, mb, db = pb
    if ya == yb and ma == db and da == mb:
        return 1
    digits_a, digits_b = a.replace("-", ""), b.replace("-", "")
    if sum(x != y for x, y in zip(digits_a, digits_b, strict=True)) == 1:
        return 2
    if (ya == yb) + (ma == mb) + (da == db) >= 2:
        return 3
    return 4


def postal_level(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return -1
    if a == b:
        return 0
    if len(a) >= 4 and len(b) >= 4 and a[:3] == b[:3]:
        return 1
    return 2


def address_level(a: str | None, b: str | None) -> int:
    if a is None or b is None:
        return -1
    if a == b:
        return 0
    if Indel.normalized_similarity(a, b) < ADDRESS_SIMILAR:
        return 3
    return 1 if address_numbers(a) == address_numbers(b) else 2


MAX_INSURANCE = 3  # numbers per record compared (the vectorized path keeps this many)


def insurance_level(a: Normalized, b: Normalized) -> int:
    ins_a, ins_b = a.insurance[:MAX_INSURANCE], b.insurance[:MAX_INSURANCE]
    if not ins_a or not ins_b:
        return -1
    if set(ins_a) & set(ins_b):
        return 0
    if set(a.households[:MAX_INSURANCE]) & set(b.households[:MAX_INSURANCE]):
        return 1
    # a typo in the first number (one insertion, deletion or substitution)
    if Levenshtein.distance(ins_a[0], ins_b[0], score_cutoff=1) <= 1:
        return 2
    return 3


def _name(a: Normalized, b: Normalized, part_a: str, part_b: str) -> int:
    return name_level(
        (getattr(a, f"{part_a}_exact"), getattr(b, f"{part_b}_exact")),
        (getattr(a, f"{part_a}_norm"), getattr(b, f"{part_b}_norm")),
        (getattr(a, f"{part_a}_kana"), getattr(b, f"{part_b}_kana")),
        (getattr(a, f"{part_a}_fold"), getattr(b, f"{part_b}_fold")),
    )


def compare(a: Normalized, b: Normalized) -> tuple[int, ...]:
    """The comparison vector of (a, b): one level index per field of FIELDS, -1 if missing."""
    family = _name(a, b, "family", "family")
    given = _name(a, b, "given", "given")
    if family >= SWAP_FROM and given >= SWAP_FROM:
        cross_family = _name(a, b, "family", "given")
        cross_given = _name(a, b, "given", "family")
        if 0 <= cross_family <= SWAP_TO and 0 <= cross_given <= SWAP_TO:
            family, given = cross_family, cross_given
    sex = -1 if a.sex is None or b.sex is None else (0 if a.sex == b.sex else 1)
    return (
        family,
        given,
        date_level(a.birth_date, b.birth_date),
        sex,
        postal_level(a.postal_code, b.postal_code),
        address_level(a.address, b.address),
        insurance_level(a, b),
    )
