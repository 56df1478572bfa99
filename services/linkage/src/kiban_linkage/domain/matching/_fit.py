"""Unsupervised estimation of a MatchModel (no labels): u from random pairs, term frequencies
from the records, m and the prior by expectation–maximisation on blocked candidate pairs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching import _compare as c
from kiban_linkage.domain.matching._blocking import (
    KIND_BITS,
    Candidates,
    candidate_pairs_dedupe,
    candidate_pairs_link,
)
from kiban_linkage.domain.matching._columns import Columns, compare_pairs
from kiban_linkage.domain.matching._identity import Normalized
from kiban_linkage.domain.matching._model import DEFAULT_POPULATION, MatchModel

__all__ = ["fit_dedupe", "fit_link", "tf_arrays"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

RANDOM_PAIRS = 400_000
EM_PAIRS = 2_000_000
EM_ITERATIONS = 60
U_ROUNDS = 2  # EM, correct u for the matches among random pairs, EM again
MIN_RECORDS = 50  # below this the data say too little: the prior model is kept


def _tf_tables(
    records: Sequence[Normalized],
) -> tuple[dict[str, dict[str, float]], dict[str, float], dict[str, float]]:
    tables: dict[str, dict[str, float]] = {}
    sumsq: dict[str, float] = {}
    unseen: dict[str, float] = {}
    for name, values in (
        ("family_name", [r.family_key for r in records]),
        ("given_name", [r.given_key for r in records]),
    ):
        counts = Counter(v for v in values if v is not None)
        total = sum(counts.values())
        if total == 0:
            continue
        # Values seen once are stored implicitly: "unseen" has their frequency.
        tables[name] = {v: n / total for v, n in counts.items() if n >= 2}
        sumsq[name] = sum((n / total) ** 2 for n in counts.values())
        unseen[name] = 1.0 / total
    return tables, sumsq, unseen


def tf_arrays(
    model: MatchModel, cols: Columns, ia: IntArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-pair TF log-factors of the a-side family and given name keys, and the a-side
    homonym risk (see MatchModel.homonym_risk)."""
    weights: list[FloatArray] = []
    freqs: list[FloatArray] = []
    for name, column in (("family_name", "family_key"), ("given_name", "given_key")):
        values = cols.vocabs[column].values
        codes = cols.codes[column][ia]
        codes = np.where(codes < 0, len(values), codes)
        per_code = np.asarray([model.tf_weight(name, v) for v in values] + [0.0])
        weights.append(per_code[codes])
        freq = [model.frequency(name, v) for v in values] + [model.frequency(name, None)]
        freqs.append(np.asarray(freq)[codes])
    population = model.fitted_on or DEFAULT_POPULATION
    risk = population * freqs[0] * freqs[1] * model.u["birth_date"][0]
    return weights[0], weights[1], risk


def _estimate_u(levels: npt.NDArray[np.int8]) -> dict[str, list[float]]:
    u: dict[str, list[float]] = {}
    for f, name in enumerate(c.FIELDS):
        k = len(c.LEVELS[name])
        col = levels[:, f]
        counts = np.bincount(col[col >= 0].astype(np.int64), minlength=k).astype(np.float64)
        # a level never seen among random pairs is rarer than one in their number
        counts = np.maximum(counts, 0.5)
        u[name] = (counts / counts.sum()).tolist()
    return u


def _em(
    model: MatchModel,
    levels: npt.NDArray[np.int8],
    tf_family: FloatArray,
    tf_given: FloatArray,
    share: float,
) -> tuple[dict[str, list[float]], float]:
    """m per level and the share of matches among the candidate pairs, starting from the
    model's m and `share` (a guess: about one match per record)."""
    m = {k: list(v) for k, v in model.m.items()}
    for _ in range(EM_ITERATIONS):
        current = replace(model, m=m, prior=0.5)
        weights = current.match_weights(levels, tf_family, tf_given)
        logit = weights + np.log(share / (1.0 - share))
        post = 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))
        new_m: dict[str, list[float]] = {}
        for f, name in enumerate(c.FIELDS):
            k = len(c.LEVELS[name])
            col = levels[:, f].astype(np.int64)
            present = col >= 0
            sums = np.bincount(col[present], weights=post[present], minlength=k)
            # a small pull towards the prior keeps empty levels finite
            sums = sums + 1e-3 * np.asarray(model.m[name]) * max(post.sum(), 1.0) * 1e-3
            new_m[name] = (sums / sums.sum()).tolist()
        new_share = float(np.clip(post.mean(), 1e-9, 1 - 1e-9))
        delta = max(max(abs(x - y) for x, y in zip(new_m[n], m[n], strict=True)) for n in c.FIELDS)
        m, share = new_m, new_share
        if delta < 1e-6:
            break
    return m, share


def _fit(
    base: MatchModel,
    records: Sequence[Normalized],
    cols: Columns,
    pairs: Candidates,
    random_pairs: tuple[IntArray, IntArray],
    total_pairs: float,
    expected_matches: float,
    rng: np.random.Generator,
) -> MatchModel:
    tf, sumsq, unseen = _tf_tables(records)
    model = replace(base, tf=tf, tf_sumsq=sumsq, tf_unseen=unseen)
    random_levels = compare_pairs(cols, *random_pairs)
    observed = _estimate_u(random_levels)
    model = replace(model, u=observed)
    ia, ib, kinds = pairs
    if len(ia) > EM_PAIRS:
        pick = rng.choice(len(ia), size=EM_PAIRS, replace=False)
        sample_a, sample_b, sample_k = ia[pick], ib[pick], kinds[pick]
    else:
        sample_a, sample_b, sample_k = ia, ib, kinds
    levels = compare_pairs(cols, sample_a, sample_b)
    tf_family, tf_given, _ = tf_arrays(model, cols, sample_a)
    share = float(np.clip(expected_matches / max(len(ia), 1), 1e-6, 0.5))
    prior = 0.0
    for _ in range(U_ROUNDS):
        m = dict(model.m)
        # Each field's m comes from pairs that a key without that field brought together:
        # pairs that share a birth date say how often matches agree on names, address,
        # insurer; pairs that share the names say how often matches agree on the birth date.
        # (EM on all pairs would take "same common name" for "same person".)
        # The blocking fields themselves agree by construction there and are left out.
        for bit, blocked in ((KIND_BITS["d"], (c.DOB,)), (KIND_BITS["n"], (c.FAMILY, c.GIVEN))):
            sel = (sample_k & bit) != 0
            if sel.sum() < MIN_RECORDS:
                continue
            local = levels[sel].copy()
            local[:, list(blocked)] = -1
            names_out = c.FAMILY in blocked
            estimated, _ = _em(
                model,
                local,
                tf_family[sel] * (not names_out),
                tf_given[sel] * (not names_out),
                0.5,
            )
            for f in range(len(c.FIELDS)):
                if f in blocked or (bit == KIND_BITS["n"] and f != c.DOB):
                    continue
                m[c.FIELDS[f]] = estimated[c.FIELDS[f]]
        model = replace(model, m=m)
        share = _share(model, levels, tf_family, tf_given, share)
        prior = float(np.clip(share * len(ia) / max(total_pairs, 1.0), 1e-12, 0.5))
        # Random pairs contain matches at the rate `prior`; remove their share from u.
        floor = 0.5 / len(random_levels)
        u: dict[str, list[float]] = {}
        for name in c.FIELDS:
            raw = np.asarray(observed[name]) - prior * np.asarray(m[name])
            raw = np.maximum(raw / (1.0 - prior), floor)
            u[name] = (raw / raw.sum()).tolist()
        model = replace(model, u=u)
    return replace(model, prior=prior, fitted_on=len(records))


def _share(
    model: MatchModel,
    levels: npt.NDArray[np.int8],
    tf_family: FloatArray,
    tf_given: FloatArray,
    share: float,
) -> float:
    """The share of matches among all candidate pairs, m and u fixed."""
    weights = replace(model, prior=0.5).match_weights(levels, tf_family, tf_given)
    for _ in range(EM_ITERATIONS):
        logit = weights + np.log(share / (1.0 - share))
        post = 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))
        new_share = float(np.clip(post.mean(), 1e-9, 1 - 1e-9))
        if abs(new_share - share) < 1e-9:
            return new_share
        share = new_share
    return share


def fit_dedupe(
    base: MatchModel,
    records: Sequence[Normalized],
    *,
    seed: int = 0,
    cols: Columns | None = None,
    pairs: Candidates | None = None,
) -> MatchModel:
    n = len(records)
    if n < MIN_RECORDS:
        return base
    rng = np.random.default_rng(seed)
    cols = cols or Columns.build(records)
    pairs = pairs or candidate_pairs_dedupe(records, cols)
    size = min(RANDOM_PAIRS, n * (n - 1) // 2)
    ra = rng.integers(0, n, size=size)
    rb = rng.integers(0, n - 1, size=size)
    rb = rb + (rb >= ra)  # never a record with itself
    return _fit(base, records, cols, pairs, (ra, rb), n * (n - 1) / 2, n / 4, rng)


def fit_link(
    base: MatchModel,
    left: Sequence[Normalized],
    right: Sequence[Normalized],
    *,
    seed: int = 0,
    cols: Columns | None = None,
    pairs: Candidates | None = None,
) -> MatchModel:
    """`cols` (if given) must be built on left + right; `pairs` index left and right."""
    if min(len(left), len(right)) < MIN_RECORDS:
        return base
    rng = np.random.default_rng(seed)
    records = [*left, *right]
    cols = cols or Columns.build(records)
    ia, ib, kinds = pairs or candidate_pairs_link(left, right, cols)
    size = min(RANDOM_PAIRS, len(left) * len(right))
    ra = rng.integers(0, len(left), size=size)
    rb = rng.integers(0, len(right), size=size) + len(left)
    expected = min(len(left), len(right)) / 2
    return _fit(
        base,
        records,
        cols,
        (ia, ib + len(left), kinds),
        (ra, rb),
        len(left) * len(right),
        expected,
        rng,
    )
