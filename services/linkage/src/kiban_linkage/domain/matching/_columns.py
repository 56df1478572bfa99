"""Columnar form of many normalized identities and the vectorized comparison of pairs.

Strings become integer codes (one vocabulary per form, shared by both sides of a link), so
equality levels are array comparisons; string similarities are computed once per distinct pair
of values with rapidfuzz's C++ `cpdist`. Levels are identical to `_compare.compare` (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import process
from rapidfuzz.distance import Indel, JaroWinkler, Levenshtein

from kiban_linkage.domain.matching import _compare as c
from kiban_linkage.domain.matching._identity import Normalized

__all__ = ["Columns", "GrowingColumns", "compare_pairs"]

IntArray = npt.NDArray[np.int64]

_NAME_FORMS = ("exact", "norm", "kana", "fold")


@dataclass
class _Vocab:
    index: dict[str, int] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    _array: npt.NDArray[np.object_] | None = field(default=None, repr=False)
    _filled: int = field(default=0, repr=False)  # values copied into _array so far

    def array(self) -> npt.NDArray[np.object_]:
        """`values` as a NumPy object array (fancy indexing in C); it grows by doubling, so a
        vocabulary that gains a few values per batch is not copied whole each time."""
        have = 0 if self._array is None else self._filled
        if self._array is None or have < len(self.values):
            if self._array is None or len(self._array) < len(self.values):
                array = np.empty(max(len(self.values), 2 * have, 64), dtype=object)
                if self._array is not None:
                    array[:have] = self._array[:have]
                self._array = array
            self._array[have : len(self.values)] = self.values[have:]
            self._filled = len(self.values)
        return self._array

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        got = self.index.get(value)
        if got is None:
            got = len(self.values)
            self.index[value] = got
            self.values.append(value)
        return got


@dataclass
class Columns:
    """Codes per record (-1 = missing) plus the vocabularies to turn codes back into strings."""

    n: int
    codes: dict[str, IntArray]
    vocabs: dict[str, _Vocab]
    dates: IntArray  # YYYYMMDD or -1

    @classmethod
    def build(cls, records: Sequence[Normalized]) -> Columns:
        vocabs: dict[str, _Vocab] = {}
        codes: dict[str, IntArray] = {}

        def factorize(vocab_name: str, column: str, values: Sequence[str | None]) -> None:
            vocab = vocabs.setdefault(vocab_name, _Vocab())
            index: dict[str | None, int] = {None: -1}
            index.update(vocab.index)
            size = len(index) - 1
            out = [index.setdefault(v, len(index) - 1) for v in values]
            if len(index) - 1 > size:
                added = list(index)[size + 1 :]
                vocab.values.extend(v for v in added if v is not None)
                vocab.index = {k: i for k, i in index.items() if k is not None}
            codes[column] = np.asarray(out, dtype=np.int64)

        n = len(records)
        by_attr: dict[str, Sequence[Any]] = {
            name: list(map(attrgetter(name), records)) for name in _ATTR_NAMES
        }
        # family and given names share vocabularies so swapped names compare by code
        for form in _NAME_FORMS:
            for part in ("family", "given"):
                attr = f"{part}_{form}"
                factorize(f"name_{form}", attr, by_attr[attr])
            vocabs[f"family_{form}"] = vocabs[f"given_{form}"] = vocabs[f"name_{form}"]
        factorize(
            "family_key",
            "family_key",
            [f or g for f, g in zip(by_attr["family_fold"], by_attr["family_norm"], strict=True)],
        )
        factorize(
            "given_key",
            "given_key",
            [f or g for f, g in zip(by_attr["given_fold"], by_attr["given_norm"], strict=True)],
        )
        postals = by_attr["postal_code"]
        factorize("postal", "postal", postals)
        factorize(
            "postal3",
            "postal3",
            [p[:3] if p is not None and len(p) >= 4 else None for p in postals],
        )
        addresses = by_attr["address"]
        factorize("address", "address", addresses)
        factorize(
            "numbers",
            "numbers",
            [c.address_numbers(a) if a is not None else None for a in addresses],
        )
        factorize("sex", "sex", by_attr["sex"])
        for k in range(c.MAX_INSURANCE):
            factorize(
                "insurance",
                f"insurance{k}",
                [x[k] if k < len(x) else None for x in by_attr["insurance"]],
            )
            factorize(
                "household",
                f"household{k}",
                [x[k] if k < len(x) else None for x in by_attr["households"]],
            )
        dates = [
            int(bd[0:4] + bd[5:7] + bd[8:10]) if bd is not None else -1
            for bd in by_attr["birth_date"]
        ]
        return cls(n, codes, vocabs, np.asarray(dates, dtype=np.int64))


_ATTR_NAMES = tuple(
    [f"{part}_{form}" for form in _NAME_FORMS for part in ("family", "given")]
    + ["birth_date", "sex", "postal_code", "address", "insurance", "households"]
)


def _below(threshold: float) -> float:
    # rapidfuzz turns a similarity cutoff into a distance bound with float arithmetic: a value
    # exactly at the threshold (an Indel of 0.8) could fall on the wrong side of it
    return threshold - 1e-6


def _pair_similarity(
    vocab: _Vocab,
    a: IntArray,
    b: IntArray,
    scorer: Any,
    cutoff: float,
) -> npt.NDArray[np.float64]:
    """Similarity per pair of codes (both >= 0), computed once per distinct code pair.
    `cutoff` is rapidfuzz's `score_cutoff` (a similarity below it reads 0, a distance above it
    reads cutoff + 1): it lets the C++ scorers stop early, and the levels only compare the
    result against thresholds at or beyond it."""
    out = np.zeros(len(a), dtype=np.float64)
    if len(a) == 0:
        return out
    width = np.int64(max(len(vocab.values), 1))
    combined = a * width + b
    unique, inverse = np.unique(combined, return_inverse=True)
    ua, ub = unique // width, unique % width
    values = vocab.array()
    sims = process.cpdist(
        values[ua], values[ub], scorer=scorer, score_cutoff=cutoff, workers=-1, dtype=np.float64
    )
    return np.asarray(sims, dtype=np.float64)[inverse]


def _name_levels(cols: Columns, part_a: str, part_b: str, ia: IntArray, ib: IntArray) -> IntArray:
    g = cols.codes
    ea, eb = g[f"{part_a}_exact"][ia], g[f"{part_b}_exact"][ib]
    na, nb = g[f"{part_a}_norm"][ia], g[f"{part_b}_norm"][ib]
    ka, kb = g[f"{part_a}_kana"][ia], g[f"{part_b}_kana"][ib]
    fa, fb = g[f"{part_a}_fold"][ia], g[f"{part_b}_fold"][ib]
    has_norm = (na >= 0) & (nb >= 0)
    has_kana = (ka >= 0) & (kb >= 0)
    exact = (ea >= 0) & (ea == eb)
    norm_eq = has_norm & (na == nb)
    kana_eq = has_kana & (ka == kb)
    fold_eq = (fa >= 0) & (fa == fb)
    need = ~(exact | norm_eq | kana_eq | fold_eq) & (has_norm | has_kana)
    sim = np.zeros(len(ia), dtype=np.float64)
    sel = need & has_norm
    if sel.any():
        sim[sel] = _pair_similarity(
            cols.vocabs["family_norm"],
            na[sel],
            nb[sel],
            JaroWinkler.normalized_similarity,
            _below(c.NAME_MID),
        )
    sel = need & has_kana
    if sel.any():
        sim[sel] = np.maximum(
            sim[sel],
            _pair_similarity(
                cols.vocabs["family_kana"],
                ka[sel],
                kb[sel],
                JaroWinkler.normalized_similarity,
                _below(c.NAME_MID),
            ),
        )
    level = np.where(
        sim >= c.NAME_HIGH, 4, np.where(sim >= c.NAME_MID, 5, np.where(has_kana, 7, 6))
    )
    level[fold_eq] = 3
    level[kana_eq] = 2
    level[norm_eq] = 1
    level[exact] = 0
    level[~(has_norm | has_kana)] = -1
    return level


def _names(cols: Columns, ia: IntArray, ib: IntArray) -> tuple[IntArray, IntArray]:
    family = _name_levels(cols, "family", "family", ia, ib)
    given = _name_levels(cols, "given", "given", ia, ib)
    swapped = np.flatnonzero((family >= c.SWAP_FROM) & (given >= c.SWAP_FROM))
    if len(swapped):
        sa, sb = ia[swapped], ib[swapped]
        cross_family = _name_levels(cols, "family", "given", sa, sb)
        cross_given = _name_levels(cols, "given", "family", sa, sb)
        better = (cross_family >= 0) & (cross_family <= c.SWAP_TO)
        better &= (cross_given >= 0) & (cross_given <= c.SWAP_TO)
        family[swapped[better]] = cross_family[better]
        given[swapped[better]] = cross_given[better]
    return family, given


def _date_levels(cols: Columns, ia: IntArray, ib: IntArray) -> IntArray:
    a, b = cols.dates[ia], cols.dates[ib]
    ya, ma, da = a // 10000, (a // 100) % 100, a % 100
    yb, mb, db = b // 10000, (b // 100) % 100, b % 100
    diff_digits = np.zeros(len(a), dtype=np.int64)
    for k in range(8):
        p = 10**k
        diff_digits += ((a // p) % 10) != ((b // p) % 10)
    parts = (ya == yb).astype(np.int64) + (ma == mb) + (da == db)
    level = np.full(len(a), 4, dtype=np.int64)
    level[parts >= 2] = 3
    level[diff_digits == 1] = 2
    level[(ya == yb) & (ma == db) & (da == mb) & (a != b)] = 1
    level[a == b] = 0
    level[(a < 0) | (b < 0)] = -1
    return level


def _address_levels(cols: Columns, ia: IntArray, ib: IntArray) -> IntArray:
    a, b = cols.codes["address"][ia], cols.codes["address"][ib]
    present = (a >= 0) & (b >= 0)
    level = np.full(len(a), 3, dtype=np.int64)
    need = present & (a != b)
    if need.any():
        sim = _pair_similarity(
            cols.vocabs["address"],
            a[need],
            b[need],
            Indel.normalized_similarity,
            _below(c.ADDRESS_SIMILAR),
        )
        numbers = cols.codes["numbers"]
        same_numbers = numbers[ia[need]] == numbers[ib[need]]
        level[need] = np.where(sim >= c.ADDRESS_SIMILAR, np.where(same_numbers, 1, 2), 3)
    level[present & (a == b)] = 0
    level[~present] = -1
    return level


def _insurance_levels(cols: Columns, ia: IntArray, ib: IntArray) -> IntArray:
    g = cols.codes
    k = c.MAX_INSURANCE
    shared = np.zeros(len(ia), dtype=bool)
    household = np.zeros(len(ia), dtype=bool)
    for i in range(k):
        xa, ha = g[f"insurance{i}"][ia], g[f"household{i}"][ia]
        for j in range(k):
            xb, hb = g[f"insurance{j}"][ib], g[f"household{j}"][ib]
            shared |= (xa >= 0) & (xa == xb)
            household |= (ha >= 0) & (ha == hb)
    first_a, first_b = g["insurance0"][ia], g["insurance0"][ib]
    present = (first_a >= 0) & (first_b >= 0)
    level = np.full(len(ia), 3, dtype=np.int64)
    need = present & ~shared & ~household
    if need.any():
        distance = _pair_similarity(
            cols.vocabs["insurance"], first_a[need], first_b[need], Levenshtein.distance, 1
        )
        level[np.flatnonzero(need)[distance <= 1]] = 2
    level[household] = 1
    level[shared] = 0
    level[~present] = -1
    return level


def compare_pairs(cols: Columns, ia: IntArray, ib: IntArray) -> npt.NDArray[np.int8]:
    """(len(ia), len(FIELDS)) comparison levels of the pairs (ia[k], ib[k]) of `cols`."""
    g = cols.codes
    out = np.empty((len(ia), len(c.FIELDS)), dtype=np.int8)
    out[:, c.FAMILY], out[:, c.GIVEN] = _names(cols, ia, ib)
    out[:, c.DOB] = _date_levels(cols, ia, ib)
    sa, sb = g["sex"][ia], g["sex"][ib]
    out[:, c.SEX] = np.where((sa < 0) | (sb < 0), -1, np.where(sa == sb, 0, 1))
    pa, pb = g["postal"][ia], g["postal"][ib]
    p3a, p3b = g["postal3"][ia], g["postal3"][ib]
    out[:, c.POSTAL] = np.where(
        (pa < 0) | (pb < 0),
        -1,
        np.where(pa == pb, 0, np.where((p3a >= 0) & (p3a == p3b), 1, 2)),
    )
    out[:, c.ADDRESS] = _address_levels(cols, ia, ib)
    out[:, c.INSURANCE] = _insurance_levels(cols, ia, ib)
    return out


class GrowingColumns(Columns):
    """`Columns` that records can be appended to (the streaming index): vocabularies grow,
    code arrays have spare capacity (doubling), so an append costs the new records only."""

    def __init__(self) -> None:
        empty = Columns.build([])
        super().__init__(0, dict(empty.codes), empty.vocabs, empty.dates)
        self._vocab_of = {column: _vocab_name(column) for column in empty.codes}

    def extend(self, records: Sequence[Normalized]) -> None:
        if not records:
            return
        part = _codes_for(records, self.vocabs, self._vocab_of)
        n, m = self.n, len(records)
        for column, values in part.items():
            self.codes[column] = _put(self.codes[column], n, values)
        self.dates = _put(self.dates, n, _dates_of(records))
        self.n = n + m

    def vocab(self, column: str) -> _Vocab:
        """The vocabulary a code column's codes index (columns may share one)."""
        return self.vocabs[self._vocab_of[column]]

    def truncate(self, n: int) -> None:
        """Forget the rows from `n` on (the next `extend` writes over them); vocabulary values
        they added stay, unused."""
        self.n = min(self.n, n)


def _vocab_name(column: str) -> str:
    if column.startswith(("family_", "given_")) and column.split("_", 1)[1] in _NAME_FORMS:
        return f"name_{column.split('_', 1)[1]}"
    for prefix in ("insurance", "household"):
        if column.startswith(prefix):
            return prefix
    return column


def _put(array: IntArray, at: int, values: IntArray) -> IntArray:
    end = at + len(values)
    if end > len(array):
        grown = np.full(max(end, 2 * len(array), 1024), -1, dtype=np.int64)
        grown[:at] = array[:at]
        array = grown
    array[at:end] = values
    return array


def _dates_of(records: Sequence[Normalized]) -> IntArray:
    return np.asarray(
        [
            int(bd[0:4] + bd[5:7] + bd[8:10]) if (bd := r.birth_date) is not None else -1
            for r in records
        ],
        dtype=np.int64,
    )


def _codes_for(
    records: Sequence[Normalized], vocabs: dict[str, _Vocab], vocab_of: dict[str, str]
) -> dict[str, IntArray]:
    """Codes of a few records in existing (growing) vocabularies: one dict lookup per value,
    no copy of a vocabulary."""
    values: dict[str, list[str | None]] = {column: [] for column in vocab_of}
    for r in records:
        for form in _NAME_FORMS:
            values[f"family_{form}"].append(getattr(r, f"family_{form}"))
            values[f"given_{form}"].append(getattr(r, f"given_{form}"))
        values["family_key"].append(r.family_key)
        values["given_key"].append(r.given_key)
        postal = r.postal_code
        values["postal"].append(postal)
        values["postal3"].append(postal[:3] if postal is not None and len(postal) >= 4 else None)
        address = r.address
        values["address"].append(address)
        values["numbers"].append(c.address_numbers(address) if address is not None else None)
        values["sex"].append(r.sex)
        for k in range(c.MAX_INSURANCE):
            values[f"insurance{k}"].append(r.insurance[k] if k < len(r.insurance) else None)
            values[f"household{k}"].append(r.households[k] if k < len(r.households) else None)
    return {
        column: np.asarray([vocabs[vocab_of[column]].code(v) for v in column_values], np.int64)
        for column, column_values in values.items()
    }
