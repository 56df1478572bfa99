"""What a linking batch holds while it is linked: each record opened, the vault records it
meets, and the effects to write at the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import (
    Event,
    RecordReceivedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import (
    Linkage,
)
from kiban_linkage.domain.index import VaultIndex
from kiban_linkage.domain.matching import (
    Normalized,
)
from kiban_linkage.replica import VaultSession
from kiban_linkage.store.vault import ALL_INSTITUTIONS, BlockEntry


class Outcome(Enum):
    LINKED = "linked"  # forwarded as record-linked
    BLOCKED = "blocked"  # the person is under an opt-out: not stored, not forwarded
    OPTED_OUT = "opted_out"  # matched a block entry: the opt-out was applied to it


@dataclass
class Known:
    """A vault record as this batch sees it (id < 0: inserted by this batch). `position` is
    its identity's row in the index's columns (committed, or staged by this transaction)."""

    id: int
    person: str
    institution: str
    token: str
    position: int | None
    deleted: bool = False


@dataclass
class NewRecord:
    row: dict[str, Any]
    digests: list[str]
    possible: list[tuple[int, float]]
    position: int
    keys: list[int]


@dataclass
class Opened:
    event: Event[RecordReceivedV1]
    identity: dict[str, Any]
    resources: list[dict[str, Any]]
    normalized: Normalized
    digests: list[str]  # blind indexes (stored in the vault)
    keys: list[int]  # in-process key hashes (the index in memory)


@dataclass
class Batch:
    ctx: Linkage
    tx: Transaction
    conn: AsyncConnection
    session: VaultSession
    base: int  # staged position of the batch's first record (record k at base + k)
    known: dict[int, Known] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    added: dict[int, list[int]] = field(default_factory=dict)  # key hash → ids put by the batch
    blocks: dict[str, set[str]] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)  # absorbed person → survivor
    counts: dict[str, int] = field(default_factory=dict)  # records per person, for merges
    new_of: Counter[str] = field(default_factory=Counter)  # batch records per person
    entries: dict[str, list[BlockEntry]] = field(default_factory=dict)
    new_persons: list[dict[str, Any]] = field(default_factory=list)
    new_records: dict[int, NewRecord] = field(default_factory=dict)
    replaced: dict[int, tuple[str, list[str], int, list[int]]] = field(default_factory=dict)
    merges: list[tuple[str, list[str]]] = field(default_factory=list)
    applied: list[tuple[str, BlockEntry, bool]] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    # per record of the batch: the index's candidates (position, keys shared), and the
    # probabilities scored together by position
    found: list[list[tuple[int, int]]] = field(default_factory=list)
    scores: list[dict[int, float]] = field(default_factory=list)

    @property
    def index(self) -> VaultIndex:
        return self.ctx.replica.index

    def position(self, record_id: int) -> int | None:
        """Where the record's current identity is in the columns (None: deleted)."""
        known = self.known.get(record_id)
        if known is not None:
            return None if known.deleted else known.position
        if record_id in self.session.position:
            return self.session.position[record_id]
        return self.index.position(record_id)

    def probability(self, k: int, position: int) -> float:
        """Record k's probability against the identity at `position`: scored with the batch
        (`prescore`) when it was among the candidates foreseen, else scored now (the same
        vectorized function on one pair)."""
        got = self.scores[k].get(position)
        if got is not None:
            return got
        pair = self.index.probabilities(
            self.ctx.model,
            np.asarray([self.base + k], dtype=np.int64),
            np.asarray([position], dtype=np.int64),
        )
        return float(pair[0])

    def person(self, person: str) -> str:
        while person in self.merged:
            person = self.merged[person]
        return person

    def blocked(self, person: str, institution: str) -> bool:
        scopes = self.blocks.get(person, ())
        return ALL_INSTITUTIONS in scopes or institution in scopes

    def candidates(self, k: int, keys: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Record id → (keys shared, position) of the records sharing a blocking key with
        record k: the index's and those this transaction put (this batch's have negative
        ids); more than `max_candidates` are cut to those sharing the most keys (ties: the
        highest id)."""
        shared: dict[int, tuple[int, int]] = {}
        ids = self.index.ids
        moved = self.session.position
        known = self.known
        for position, count in self.found[k]:
            record_id = ids[position]
            if record_id in moved:  # replaced or deleted in this transaction: see below
                continue
            seen = known.get(record_id)
            if seen is not None and (seen.deleted or seen.position != position):
                continue  # deleted or replaced in this batch: see below
            shared[record_id] = (count, position)
        counts: Counter[int] = Counter()
        earlier = self.session.added
        for h in keys:
            got = self.added.get(h)
            if got:
                counts.update(got)
            if earlier:
                counts.update(earlier.get(h, ()))
        for record_id, count in counts.items():
            at = self.position(record_id)
            if at is None:
                continue
            old = shared.get(record_id)
            shared[record_id] = (max(count, old[0]) if old is not None else count, at)
        limit = self.ctx.options.max_candidates
        if len(shared) > limit:
            ranked = sorted(shared, key=lambda i: (-shared[i][0], -i))[:limit]
            shared = {i: shared[i] for i in ranked}
        return shared
