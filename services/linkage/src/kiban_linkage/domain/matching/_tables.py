"""Data tables shipped with the matcher (see the header of each file for its source)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from kiban_linkage.domain.matching import _text

__all__ = ["surname_frequencies", "surnames"]

_POPULATION = 125_000_000


@cache
def surnames() -> tuple[tuple[str, str, int], ...]:
    """(surname, reading, approximate bearers) from `data/surnames.tsv`."""
    text = (
        resources.files("kiban_linkage.domain.matching")
        .joinpath("data/surnames.tsv")
        .read_text(encoding="utf-8")
    )
    rows: list[tuple[str, str, int]] = []
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("surname\t"):
            continue
        name, reading, count = line.split("\t")
        rows.append((name, reading, int(count)))
    return tuple(rows)


@cache
def surname_frequencies() -> dict[str, float]:
    """Population share per family-name key: the folded reading (サト for 佐藤/サトウ/サトー,
    summed over every spelling) and the normalized kanji spelling."""
    shares: dict[str, float] = {}
    for name, reading, count in surnames():
        share = count / _POPULATION
        folded = _text.fold_kana(_text.kana(reading))
        _, normalized = _text.latin_or_kanji(name)
        for key in {folded, normalized}:
            if key is not None:
                shares[key] = shares.get(key, 0.0) + share
    return shares
