"""Batch linking (two sets) and deduplication (one set): block, compare, score — vectorized."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching._blocking import candidate_pairs_dedupe, candidate_pairs_link
from kiban_linkage.domain.matching._columns import Columns, compare_pairs
from kiban_linkage.domain.matching._fit import fit_dedupe, fit_link, tf_arrays
from kiban_linkage.domain.matching._identity import Normalized
from kiban_linkage.domain.matching._model import MatchModel

__all__ = ["Links", "dedupe", "link", "score_pairs"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

CHUNK = 500_000  # pairs compared at a time (bounds memory)


@dataclass
class Links:
    """Scored candidate pairs at or above `min_probability`, sorted by (left, right).

    `left`/`right` index the input sequences (for `dedupe` both index the one sequence,
    left < right). Use `model.classify(p)` or the thresholds to split links from the band."""

    left: IntArray
    right: IntArray
    probability: FloatArray
    model: MatchModel
    candidates: int  # pairs compared

    def links(self) -> npt.NDArray[np.bool_]:
        return self.probability >= self.model.link_threshold

    def possible(self) -> npt.NDArray[np.bool_]:
        p = self.probability
        return (p >= self.model.possible_threshold) & (p < self.model.link_threshold)


def score_pairs(model: MatchModel, cols: Columns, ia: IntArray, ib: IntArray) -> FloatArray:
    """Probabilities of the pairs (ia[k], ib[k]) of `cols`, in chunks."""
    out = np.empty(len(ia), dtype=np.float64)
    for start in range(0, len(ia), CHUNK):
        a, b = ia[start : start + CHUNK], ib[start : start + CHUNK]
        levels = compare_pairs(cols, a, b)
        tf_family, tf_given, risk = tf_arrays(model, cols, a)
        out[start : start + CHUNK] = model.probabilities(levels, tf_family, tf_given, risk)
    return out


def _keep(
    ia: IntArray, ib: IntArray, p: FloatArray, model: MatchModel, floor: float | None
) -> tuple[IntArray, IntArray, FloatArray]:
    limit = model.possible_threshold if floor is None else floor
    sel = p >= limit
    return ia[sel], ib[sel], p[sel]


def link(
    left: Sequence[Normalized],
    right: Sequence[Normalized],
    *,
    model: MatchModel | None = None,
    min_probability: float | None = None,
    seed: int = 0,
) -> Links:
    """Link two sets. Without a model one is fitted on the data (EM, no labels)."""
    cols = Columns.build([*left, *right])
    ia, ib, kinds = candidate_pairs_link(left, right, cols)
    if model is None:
        model = fit_link(
            MatchModel.default(), left, right, seed=seed, cols=cols, pairs=(ia, ib, kinds)
        )
    p = score_pairs(model, cols, ia, ib + len(left))
    ka, kb, kp = _keep(ia, ib, p, model, min_probability)
    return Links(ka, kb, kp, model, len(ia))


def dedupe(
    records: Sequence[Normalized],
    *,
    model: MatchModel | None = None,
    min_probability: float | None = None,
    seed: int = 0,
) -> Links:
    """Pairs of records within one set that are the same person."""
    cols = Columns.build(records)
    ia, ib, kinds = candidate_pairs_dedupe(records, cols)
    if model is None:
        model = fit_dedupe(
            MatchModel.default(), records, seed=seed, cols=cols, pairs=(ia, ib, kinds)
        )
    p = score_pairs(model, cols, ia, ib)
    ka, kb, kp = _keep(ia, ib, p, model, min_probability)
    return Links(ka, kb, kp, model, len(ia))
