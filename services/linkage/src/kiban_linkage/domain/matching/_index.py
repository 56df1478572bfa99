"""An in-memory incremental index: the engine's streaming path (add records, match each
record against everything added before it), for `kiban` tools, tests and the streaming bench.
The service's own index (`kiban_linkage.domain.index.VaultIndex`) is the same algorithm keyed by
vault record ids, with removals and a batch staged until its transaction commits.

`match_and_add` takes a batch (a consumer batch): candidates are gathered record by record,
each seeing the records before it (as `match` then `add` one at a time would), and all the
batch's pairs are then compared and scored at once on growing columnar codes
(`GrowingColumns`, the vectorized comparison of `kiban link`) instead of one scalar
`probability` call per pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching._blocking import MAX_BLOCK, blocking_keys
from kiban_linkage.domain.matching._columns import Columns, GrowingColumns, compare_pairs
from kiban_linkage.domain.matching._identity import Normalized
from kiban_linkage.domain.matching._model import DEFAULT_POPULATION, MatchModel

__all__ = ["MatchIndex", "TermFactors"]

FloatArray = npt.NDArray[np.float64]
Matches = list[tuple[int, float]]


class MatchIndex:
    """Records by position; blocking keys → positions (hashed in memory); the records' codes
    in growing columns for vectorized scoring."""

    def __init__(self, model: MatchModel) -> None:
        self.model = model
        self._records: list[Normalized] = []
        # key hash → position (one record) or list of positions: most keys have one record
        self._keys: dict[int, int | list[int]] = {}
        self._cols = GrowingColumns()
        self._tf = TermFactors()

    def __len__(self) -> int:
        return len(self._records)

    def record(self, position: int) -> Normalized:
        return self._records[position]

    def add(self, record: Normalized) -> int:
        position = self._add_keys(record)
        self._cols.extend([record])
        return position

    def add_many(self, records: Iterable[Normalized]) -> None:
        batch: list[Normalized] = []
        for r in records:
            self._add_keys(r)
            batch.append(r)
            if len(batch) >= 10_000:
                self._cols.extend(batch)
                batch = []
        self._cols.extend(batch)

    def _add_keys(self, record: Normalized, found: set[int] | None = None) -> int:
        """Add the record to its blocks; with `found`, first collect the candidates each block
        held (one walk over the keys: every block is read before the record joins it)."""
        position = len(self._records)
        self._records.append(record)
        keys = self._keys
        for key in blocking_keys(record):
            h = hash(key)
            got = keys.get(h)
            if got is None:
                keys[h] = position
            elif isinstance(got, int):
                if found is not None:
                    found.add(got)
                keys[h] = [got, position]
            else:
                if found is not None and len(got) <= MAX_BLOCK:
                    found.update(got)
                got.append(position)
        if found is not None:
            found.discard(position)  # a key the record yields twice must not find the record
        return position

    def candidates(self, record: Normalized) -> set[int]:
        found: set[int] = set()
        for key in blocking_keys(record):
            got = self._keys.get(hash(key))
            if got is None:
                continue
            if isinstance(got, int):
                found.add(got)
            elif len(got) <= MAX_BLOCK:
                found.update(got)
        return found

    def match(self, record: Normalized) -> Matches:
        """(position, probability) of indexed records at or above the possible threshold,
        most probable first (the scalar path: one `probability` per candidate)."""
        probability = self.model.probability
        floor = self.model.possible_threshold
        scored = [
            (pos, p)
            for pos in self.candidates(record)
            if (p := probability(record, self._records[pos])) >= floor
        ]
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored

    def match_and_add(self, records: Sequence[Normalized]) -> list[Matches]:
        """For each record in order: `match` against everything added before it (earlier
        records of the batch included), then `add` it. Same results as the scalar path."""
        first = len(self._records)
        queries: list[int] = []
        others: list[int] = []
        for record in records:
            found: set[int] = set()
            position = self._add_keys(record, found)
            queries.extend([position] * len(found))
            others.extend(found)
        self._cols.extend(records)
        ia = np.asarray(queries, dtype=np.int64)
        ib = np.asarray(others, dtype=np.int64)
        out: list[Matches] = [[] for _ in records]
        if not len(ia):
            return out
        p = self._probabilities(ia, ib)
        keep = np.flatnonzero(p >= self.model.possible_threshold)
        # most probable first, ties by position (as `match`)
        order = keep[np.lexsort((ib[keep], -p[keep], ia[keep]))]
        for q, o, prob in zip(
            ia[order].tolist(), ib[order].tolist(), p[order].tolist(), strict=True
        ):
            out[q - first].append((o, prob))
        return out

    def _probabilities(self, ia: npt.NDArray[np.int64], ib: npt.NDArray[np.int64]) -> FloatArray:
        return self._tf.probabilities(self.model, self._cols, ia, ib)


class TermFactors:
    """Scores pairs of rows of growing columns, keeping the per-code term-frequency factors of
    the name keys between calls (only codes new since the last call are computed; a new model
    starts them over). The a-side (`ia`) is the record being matched, as in `score_pairs`."""

    def __init__(self) -> None:
        self._tf: dict[str, tuple[FloatArray, FloatArray]] = {}
        self._model: MatchModel | None = None

    def probabilities(
        self, model: MatchModel, cols: Columns, ia: npt.NDArray[np.int64], ib: npt.NDArray[np.int64]
    ) -> FloatArray:
        levels = compare_pairs(cols, ia, ib)
        if self._model is not model:  # the model was replaced: per-code factors anew
            self._tf = {}
            self._model = model
        weights: list[FloatArray] = []
        freqs: list[FloatArray] = []
        for name, column in (("family_name", "family_key"), ("given_name", "given_key")):
            values = cols.vocabs[column].values
            empty = np.zeros(0, dtype=np.float64)
            tf_weight, tf_freq = self._tf.get(name, (empty, empty))
            if len(tf_weight) < len(values):  # codes new since the last batch
                new = values[len(tf_weight) :]
                tf_weight = np.concatenate((tf_weight, [model.tf_weight(name, v) for v in new]))
                tf_freq = np.concatenate((tf_freq, [model.frequency(name, v) for v in new]))
                self._tf[name] = (tf_weight, tf_freq)
            codes = cols.codes[column][ia]
            missing = codes < 0
            weights.append(np.where(missing, 0.0, tf_weight[codes]))
            freqs.append(np.where(missing, model.frequency(name, None), tf_freq[codes]))
        population = model.fitted_on or DEFAULT_POPULATION
        risk = population * freqs[0] * freqs[1] * model.u["birth_date"][0]
        return model.probabilities(levels, weights[0], weights[1], risk)
