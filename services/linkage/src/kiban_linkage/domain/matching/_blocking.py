"""Blocking: the keys under which two records are compared at all.

Several keys per record, so that one typo (or a changed name after marriage, or a moved address)
leaves at least one key shared with the other records of the same person:

- `d`:  birth date + first letter of the family name, and of the given name (readings)
- `n`:  family + given name (readings, folded) — catches birth-date errors
- `i`:  each insurance number
- `pd`: postal code + birth date — catches a changed family name with a typo in the given name
- `p`:  postal code + family name, and + given name — catches an unknown or mistyped birth date
- `a`:  the normalized address — catches mistyped names with an unknown birth date
- `h`:  postal code + the house numbers of the address — catches a mistyped address as well

Name keys do not say which name field a value came from, so swapped names block together.

The service stores keyed hashes (blind indexes) of these strings, never the strings. Batches
compute the same keys on the integer codes of `Columns` (a test checks both agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching._columns import Columns
from kiban_linkage.domain.matching._compare import MAX_INSURANCE, address_numbers
from kiban_linkage.domain.matching._identity import Normalized

__all__ = [
    "KIND_BITS",
    "Candidates",
    "blocking_keys",
    "candidate_pairs_dedupe",
    "candidate_pairs_link",
]

# Which kinds of key brought a pair together (bit mask per pair): EM estimates the m of a field
# on pairs blocked by keys that do not contain it.
KIND_BITS = {"d": 1, "n": 2, "i": 4, "pd": 8, "p": 16, "a": 32, "h": 64}

Candidates = tuple["IntArray", "IntArray", "IntArray"]  # left, right, kind mask

IntArray = npt.NDArray[np.int64]

# A key shared by more records than this on one side says nothing (a placeholder birth date, an
# institution that writes 不明 in every name); pairs under it are not generated.
MAX_BLOCK = 2000


def blocking_keys(n: Normalized) -> list[str]:
    """Blocking key strings of `n` (deterministic; no key for what is missing)."""
    keys: list[str] = []
    dob, postal = n.birth_date, n.postal_code
    # Name keys ignore which field a name is in (swapped names still block together) and come
    # in the reading and in the spelling, so a record without kana meets one with kana.
    names = sorted({x for x in (n.family_fold, n.given_fold, n.family_norm, n.given_norm) if x})
    pairs: set[tuple[str, str]] = set()
    for first, second in ((n.family_fold, n.given_fold), (n.family_norm, n.given_norm)):
        if first and second:
            pairs.add((first, second) if first <= second else (second, first))
    if dob is not None:
        for initial in sorted({x[0] for x in names}):
            keys.append(f"d:{dob}:{initial}")
        if postal is not None:
            keys.append(f"pd:{postal}:{dob}")
    for first, second in sorted(pairs):
        keys.append(f"n:{first}:{second}")
    if postal is not None:
        for name in names:
            keys.append(f"p:{postal}:{name}")
    if n.address is not None:
        keys.append(f"a:{n.address}")
        numbers = address_numbers(n.address)
        if postal is not None and numbers:
            keys.append(f"h:{postal}:{numbers}")
    for number in n.insurance:
        keys.append(f"i:{number}")
    return keys


def _column_keys(cols: Columns) -> tuple[IntArray, IntArray, IntArray]:
    """(key code, owner record, kind bit of each code) for every record of `cols`: the keys of
    `blocking_keys`, computed on integer codes (one code space per kind) instead of strings."""
    g = cols.codes
    fold, norm = cols.vocabs["family_fold"].values, cols.vocabs["family_norm"].values
    unified: dict[str, int] = {}
    fold_uid = np.asarray([unified.setdefault(v, len(unified)) for v in fold] + [-1])
    norm_uid = np.asarray([unified.setdefault(v, len(unified)) for v in norm] + [-1])
    initials: dict[str, int] = {}
    initial_of = np.asarray([initials.setdefault(v[0], len(initials)) for v in unified] + [-1])
    nu = np.int64(max(len(unified), 1))
    names = [
        fold_uid[g["family_fold"]],
        fold_uid[g["given_fold"]],
        norm_uid[g["family_norm"]],
        norm_uid[g["given_norm"]],
    ]
    dob, postal = cols.dates, g["postal"]
    owner = np.arange(cols.n, dtype=np.int64)
    parts: list[tuple[int, IntArray, IntArray]] = []

    def add(kind: str, sel: npt.NDArray[np.bool_], values: IntArray) -> None:
        parts.append((KIND_BITS[kind], values[sel], owner[sel]))

    for uid in names:
        add("d", (uid >= 0) & (dob >= 0), dob * np.int64(len(initials) + 1) + initial_of[uid])
        add("p", (uid >= 0) & (postal >= 0), postal * nu + uid)
    for first, second in ((names[0], names[1]), (names[2], names[3])):
        lo, hi = np.minimum(first, second), np.maximum(first, second)
        add("n", (first >= 0) & (second >= 0), lo * nu + hi)
    add("pd", (postal >= 0) & (dob >= 0), postal * np.int64(100_000_000) + dob)
    address = g["address"]
    add("a", address >= 0, address)
    numbers = g["numbers"]
    empty = cols.vocabs["numbers"].index.get("", -2)
    nn = np.int64(max(len(cols.vocabs["numbers"].values), 1))
    add("h", (postal >= 0) & (numbers >= 0) & (numbers != empty), postal * nn + numbers)
    for k in range(MAX_INSURANCE):
        ins = g[f"insurance{k}"]
        add("i", ins >= 0, ins)
    codes: list[IntArray] = []
    owners: list[IntArray] = []
    kinds: list[IntArray] = []
    offset = 0
    by_kind: dict[int, list[tuple[IntArray, IntArray]]] = {}
    for bit, values, who in parts:
        by_kind.setdefault(bit, []).append((values, who))
    for bit, chunks in by_kind.items():
        values = np.concatenate([v for v, _ in chunks])
        who = np.concatenate([w for _, w in chunks])
        unique, inverse = np.unique(values, return_inverse=True)
        code = inverse.astype(np.int64) + offset
        # one entry per (key, record)
        pair = np.unique(code * np.int64(cols.n) + who)
        codes.append(pair // cols.n)
        owners.append(pair % cols.n)
        kinds.append(np.full(len(unique), bit, dtype=np.int64))
        offset += len(unique)
    if not codes:
        empty_array = np.zeros(0, dtype=np.int64)
        return empty_array, empty_array, empty_array
    return np.concatenate(codes), np.concatenate(owners), np.concatenate(kinds)


def _ranges(starts: IntArray, counts: IntArray) -> IntArray:
    """Concatenation of arange(s, s+c) for each (s, c), vectorized."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(ends - counts, counts)
    return np.arange(total, dtype=np.int64) - offsets + np.repeat(starts, counts)


def candidate_pairs_link(
    left: Sequence[Normalized], right: Sequence[Normalized], cols: Columns | None = None
) -> Candidates:
    """Distinct (left index, right index) pairs sharing at least one blocking key, with the
    mask of the key kinds they share. `cols`, if given, is built on left + right."""
    cols = cols if cols is not None else Columns.build([*left, *right])
    codes, owners, kind_of = _column_keys(cols)
    n_left = len(left)
    is_left = owners < n_left
    lc, lo = codes[is_left], owners[is_left]
    rc, ro = codes[~is_left], owners[~is_left] - n_left
    order = np.argsort(rc, kind="stable")
    rc, ro = rc[order], ro[order]
    lcount = np.bincount(lc, minlength=len(kind_of))
    rcount = np.bincount(rc, minlength=len(kind_of))
    big = (lcount > MAX_BLOCK) | (rcount > MAX_BLOCK)
    keep = ~big[lc]
    lc, lo = lc[keep], lo[keep]
    starts = np.searchsorted(rc, lc, side="left")
    counts = np.searchsorted(rc, lc, side="right") - starts
    ia = np.repeat(lo, counts)
    ib = ro[_ranges(starts, counts)]
    mask = kind_of[np.repeat(lc, counts)]
    return _distinct(ia, ib, mask, max(len(right), 1))


def candidate_pairs_dedupe(
    records: Sequence[Normalized], cols: Columns | None = None
) -> Candidates:
    """Distinct (i, j) pairs with i < j sharing at least one blocking key (+ kind mask)."""
    cols = cols if cols is not None else Columns.build(records)
    kc, ko, kind_of = _column_keys(cols)
    counts = np.bincount(kc, minlength=len(kind_of))
    keep = counts[kc] <= MAX_BLOCK
    kc, ko = kc[keep], ko[keep]
    order = np.lexsort((ko, kc))
    kc, ko = kc[order], ko[order]
    parts_a: list[IntArray] = []
    parts_b: list[IntArray] = []
    parts_k: list[IntArray] = []
    idx = np.arange(len(kc))
    offset = 1
    while len(idx):
        idx = idx[idx + offset < len(kc)]
        idx = idx[kc[idx + offset] == kc[idx]]
        if not len(idx):
            break
        parts_a.append(ko[idx])
        parts_b.append(ko[idx + offset])
        parts_k.append(kind_of[kc[idx]])
        offset += 1
    if not parts_a:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    ia, ib = np.concatenate(parts_a), np.concatenate(parts_b)
    lo, hi = np.minimum(ia, ib), np.maximum(ia, ib)
    sel = lo != hi
    return _distinct(lo[sel], hi[sel], np.concatenate(parts_k)[sel], max(len(records), 1))


def _distinct(ia: IntArray, ib: IntArray, mask: IntArray, width: int) -> Candidates:
    if len(ia) == 0:
        return ia, ib, mask
    combined = ia * np.int64(width) + ib
    order = np.argsort(combined, kind="stable")
    combined = combined[order]
    starts = np.flatnonzero(np.r_[True, combined[1:] != combined[:-1]])
    unique = combined[starts]
    masks = np.bitwise_or.reduceat(mask[order], starts)
    return unique // width, unique % width, masks
