"""An in-memory incremental index: the engine's streaming path (add one record, match one
record against everything added so far). The service keeps its index in the database (blind
indexes of `blocking_keys`); this class is the same algorithm without storage, for `kiban`
tools, tests and the streaming bench."""

from __future__ import annotations

from collections.abc import Iterable

from kiban_linkage.domain.matching._blocking import MAX_BLOCK, blocking_keys
from kiban_linkage.domain.matching._identity import Normalized
from kiban_linkage.domain.matching._model import MatchModel

__all__ = ["MatchIndex"]


class MatchIndex:
    """Records by position; blocking keys → positions (hashed in memory)."""

    def __init__(self, model: MatchModel) -> None:
        self.model = model
        self._records: list[Normalized] = []
        # key hash → position (one record) or list of positions: most keys have one record
        self._keys: dict[int, int | list[int]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def record(self, position: int) -> Normalized:
        return self._records[position]

    def add(self, record: Normalized) -> int:
        position = len(self._records)
        self._records.append(record)
        keys = self._keys
        for key in blocking_keys(record):
            h = hash(key)
            got = keys.get(h)
            if got is None:
                keys[h] = position
            elif isinstance(got, int):
                keys[h] = [got, position]
            else:
                got.append(position)
        return position

    def add_many(self, records: Iterable[Normalized]) -> None:
        for r in records:
            self.add(r)

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

    def match(self, record: Normalized) -> list[tuple[int, float]]:
        """(position, probability) of indexed records at or above the possible threshold,
        most probable first."""
        probability = self.model.probability
        floor = self.model.possible_threshold
        scored = [
            (pos, p)
            for pos in self.candidates(record)
            if (p := probability(record, self._records[pos])) >= floor
        ]
        scored.sort(key=lambda item: (-item[1], item[0]))
        return scored
