"""Incremental linking of `record-received` events (convention 1 in, convention 4 out).

The consumer runner applies a batch of events in one transaction; the records of a batch are
linked together (`link_records`) so a batch costs a handful of round trips, not several per
record. For each record, in arrival order:

1. Open the identity and the resources; normalize the identity; blind-index its blocking keys.
2. Candidates: the records of this replica's match index in memory sharing a blocking key
   (`domain.index.VaultIndex`, kept in step with the vault under the vault lock: `replica`),
   plus the same institution patient; the records linked earlier in the batch count too.
3. Score every candidate with the model in force, in memory; read the few at or above the
   possible band from the vault (current person, still there); link at the link threshold,
   record the "possible" band for review (never linked).
4. A record whose person is blocked (for its institution or all) is neither stored nor
   forwarded. Otherwise it joins its person (several persons: they merge and the event's
   `merged_from` names the absorbed pseudonyms) or a new one with a random key; its identity
   goes into the vault encrypted, its blocking keys as blind indexes.
5. A record that matches an opt-out block entry at the strict threshold puts that opt-out in
   force for its person (blocked; for `stop_and_delete` its vault records, this one included,
   are deleted; `person-purged` if the person had been forwarded before) and is not forwarded.
   Otherwise `record-linked` carries the stripped resources and the demographics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise
from typing import Any, Literal, cast

import numpy as np
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import (
    PERSON_PURGED,
    RECORD_LINKED,
    Demographics,
    Event,
    PersonPurgedV1,
    RecordLinkedV1,
    RecordReceivedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import (
    BLOCK_SUBJECT,
    BLOCKING,
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.domain.demographics import demographics
from kiban_linkage.domain.index import VaultIndex
from kiban_linkage.domain.matching import (
    Normalized,
    blocking_keys,
    identity_from_mapping,
    normalize,
)
from kiban_linkage.domain.persons import Scored, decide_link, new_person_key, survivor
from kiban_linkage.domain.stripping import strip_resources
from kiban_linkage.replica import VaultSession, hold
from kiban_linkage.store import vault
from kiban_linkage.store.vault import ALL_INSTITUTIONS, BlockEntry

SOURCE = "/kiban/linkage"
Action = Literal["stop", "stop_and_delete"]


class Outcome(Enum):
    LINKED = "linked"  # forwarded as record-linked
    BLOCKED = "blocked"  # the person is under an opt-out: not stored, not forwarded
    OPTED_OUT = "opted_out"  # matched a block entry: the opt-out was applied to it


@dataclass
class _Known:
    """A vault record as this batch sees it (id < 0: inserted by this batch). `position` is
    its identity's row in the index's columns (committed, or staged by this transaction)."""

    id: int
    person: str
    institution: str
    token: str
    position: int | None
    deleted: bool = False


@dataclass
class _New:
    row: dict[str, Any]
    digests: list[str]
    possible: list[tuple[int, float]]
    position: int
    keys: list[int]


@dataclass
class _Opened:
    event: Event[RecordReceivedV1]
    identity: dict[str, Any]
    resources: list[dict[str, Any]]
    normalized: Normalized
    digests: list[str]  # blind indexes (stored in the vault)
    keys: list[int]  # in-process key hashes (the index in memory)


@dataclass
class _Batch:
    ctx: Linkage
    tx: Transaction
    conn: AsyncConnection
    session: VaultSession
    base: int  # staged position of the batch's first record (record k at base + k)
    known: dict[int, _Known] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    added: dict[int, list[int]] = field(default_factory=dict)  # key hash → ids put by the batch
    blocks: dict[str, set[str]] = field(default_factory=dict)
    merged: dict[str, str] = field(default_factory=dict)  # absorbed person → survivor
    counts: dict[str, int] = field(default_factory=dict)  # records per person, for merges
    new_of: Counter[str] = field(default_factory=Counter)  # batch records per person
    entries: dict[str, list[BlockEntry]] = field(default_factory=dict)
    new_persons: list[dict[str, Any]] = field(default_factory=list)
    new_records: dict[int, _New] = field(default_factory=dict)
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
        (`_prescore`) when it was among the candidates foreseen, else scored now (the same
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


async def link_record(ctx: Linkage, tx: Transaction, event: Event[RecordReceivedV1]) -> Outcome:
    """One record alone (see `link_records`)."""
    return (await link_records(ctx, tx, [event]))[0]


async def link_records(
    ctx: Linkage, tx: Transaction, events: Sequence[Event[RecordReceivedV1]]
) -> list[Outcome]:
    """Link `events` in order within the caller's transaction; returns each one's outcome."""
    conn = await tx.session.connection()
    opened = [_open(ctx, e) for e in events]  # before the lock: replicas do this in parallel
    session = await hold(ctx, tx)  # the vault lock; the index is up to date
    await ctx.ensure_model(conn)
    base = ctx.replica.index.stage([item.normalized for item in opened])
    batch = _Batch(ctx, tx, conn, session, base)
    _prescore(batch, opened)
    await _load(batch, opened)
    outcomes = [await _link_one(batch, k, item) for k, item in enumerate(opened)]
    await _write(batch)
    return outcomes


def _open(ctx: Linkage, event: Event[RecordReceivedV1]) -> _Opened:
    data = event.data
    identity = ctx.cipher.decrypt_json(data.identity, context=RECORD_RECEIVED_IDENTITY)
    content = ctx.cipher.decrypt_json(data.resources, context=RECORD_RECEIVED_RESOURCES)
    resources = [r for r in content.get("resources", []) if isinstance(r, dict)]
    normalized = normalize(identity_from_mapping(identity))
    keys = sorted(set(blocking_keys(normalized)))
    digests = [ctx.index.digest(k, context=BLOCKING) for k in keys]
    return _Opened(event, identity, resources, normalized, digests, [hash(k) for k in keys])


def _prescore(batch: _Batch, opened: Sequence[_Opened]) -> None:
    """Score the batch's foreseeable candidate pairs at once on the index's columns: for each
    record, the index's candidates (ranked and capped as `candidates` does), what this
    transaction put earlier, and the earlier records of the batch sharing a key. Anything
    `_link_one` meets beyond these is scored there, one pair."""
    ctx, index = batch.ctx, batch.index
    options = ctx.options
    session = batch.session
    staged = session.added  # what earlier batches of this transaction put (usually nothing)
    base = batch.base
    left: list[int] = []
    right: list[int] = []
    bounds = [0]
    earlier: dict[int, list[int]] = {}  # key hash → positions of the batch's records so far
    for k, item in enumerate(opened):
        found = index.candidates(
            item.keys, max_block=options.max_block, limit=options.max_candidates
        )
        batch.found.append(found)
        others = {p for p, _ in found}
        for h in item.keys:
            got = earlier.get(h)
            if got is None:
                earlier[h] = [base + k]
            else:
                others.update(got)
                got.append(base + k)
            if staged:
                for record_id in staged.get(h, ()):
                    position = session.position.get(record_id)
                    if position is not None:
                        others.add(position)
        left.extend([base + k] * len(others))
        right.extend(others)
        bounds.append(len(right))
    if not left:
        batch.scores = [{} for _ in opened]
        return
    ia = np.asarray(left, dtype=np.int64)
    ib = np.asarray(right, dtype=np.int64)
    probabilities = index.probabilities(ctx.model, ia, ib).tolist()
    batch.scores = [
        dict(zip(right[lo:hi], probabilities[lo:hi], strict=True)) for lo, hi in pairwise(bounds)
    ]


async def _load(batch: _Batch, opened: Sequence[_Opened]) -> None:
    """From the database, what decisions need: the candidates scored at or above the possible
    band and the same institution patients (their persons and blocks), and the block entries
    sharing a key. Under the vault lock the database is current."""
    floor = batch.ctx.possible_threshold
    index = batch.index
    committed = index.positions
    # positions staged by an earlier batch of this transaction → their records
    staged = {at: r for r, at in batch.session.position.items() if at is not None}
    ids: set[int] = set()
    for scores in batch.scores:
        for position, p in scores.items():
            if p < floor:
                continue
            if position < committed:
                ids.add(index.record_id(position))
            elif position in staged:
                ids.add(staged[position])
    await _know(batch, ids, [item.event.key for item in opened])
    digests = {d for item in opened for d in item.digests}
    for digest, entry in await vault.block_entries_for(batch.conn, digests):
        batch.entries.setdefault(digest, []).append(entry)


async def _know(batch: _Batch, ids: set[int], record_keys: Sequence[str] = ()) -> None:
    """Load vault records (by id or record key) into `known`, with their persons' blocks."""
    missing = {i for i in ids if i not in batch.known}
    if not missing and not record_keys:
        return
    rows = await vault.records_by(batch.conn, missing, record_keys)
    persons: set[str] = set()
    for r in rows:
        if r.id in batch.known:
            continue
        person = batch.person(r.person_key)
        position = batch.position(r.id)
        batch.known[r.id] = _Known(
            r.id, person, r.institution_code, r.identity, position, position is None
        )
        batch.by_key.setdefault(r.record_key, r.id)
        persons.add(person)
    for person, scopes in (await vault.blocks_of(batch.conn, persons)).items():
        batch.blocks.setdefault(person, set()).update(scopes)


async def _link_one(batch: _Batch, k: int, item: _Opened) -> Outcome:
    ctx = batch.ctx
    event, identity, normalized, digests = item.event, item.identity, item.normalized, item.digests
    institution = event.data.institution_code
    position = batch.base + k
    floor = ctx.possible_threshold
    existing = batch.by_key.get(event.key)
    if existing is not None and batch.known[existing].deleted:
        existing = None
    scores = batch.scores[k]
    probable: list[tuple[int, int, float]] = []  # (keys shared, record id, probability)
    for i, (count, at) in batch.candidates(k, item.keys).items():
        if i == existing:
            continue
        probability = scores.get(at)
        if probability is None:
            probability = batch.probability(k, at)
        if probability >= floor:
            probable.append((count, i, probability))
    # in the candidates' ranking (most keys shared first, then the highest id), which decides
    # between equal probabilities
    probable.sort(key=lambda c: (-c[0], -c[1]))
    await _know(batch, {i for _, i, _ in probable})
    scored = [Scored(i, batch.known[i].person, prob) for _, i, prob in probable]
    decision = decide_link(
        scored, link_threshold=ctx.link_threshold, possible_threshold=ctx.possible_threshold
    )
    persons = list(decision.persons)
    if existing is not None and batch.known[existing].person not in persons:
        # The same institution patient is the same person, whatever the scores say.
        persons.insert(0, batch.known[existing].person)
    if any(batch.blocked(p, institution) for p in persons):
        return Outcome.BLOCKED
    hit = _block_entry_hit(batch, normalized, digests, institution)

    now = ctx.clock()
    merged_from: list[str] = []
    if not persons:
        if hit is not None and hit.action == "stop_and_delete":
            batch.hits.append(hit.id)
            return Outcome.OPTED_OUT  # nothing of theirs is stored
        person = new_person_key()
        batch.new_persons.append(
            {"person_key": person, "pseudonym": ctx.pseudonym(person), "created_at": now}
        )
        batch.counts[person] = 0
    elif len(persons) == 1:
        person = persons[0]
    else:
        counts = await _record_counts(batch, persons)
        person = survivor(counts.items())
        absorbed = [p for p in persons if p != person]
        batch.merges.append((person, absorbed))
        for gone in absorbed:
            batch.merged[gone] = person
            batch.counts[person] += batch.counts.pop(gone)
            batch.new_of[person] += batch.new_of.pop(gone, 0)
            batch.blocks.setdefault(person, set()).update(batch.blocks.pop(gone, set()))
        for known in batch.known.values():
            if known.person in absorbed:
                known.person = person
        merged_from = [ctx.pseudonym(p) for p in absorbed]

    token = ctx.seal_identity(identity)
    if existing is not None:
        known = batch.known[existing]
        if known.person != person:
            _count(batch, known.person, -1)
            _count(batch, person, +1)
        known.person, known.token, known.position = person, token, position
        if existing < 0:
            pending = batch.new_records[existing]
            pending.row.update(identity=token, person_key=person)
            pending.digests, pending.position, pending.keys = digests, position, item.keys
        else:
            batch.replaced[existing] = (token, digests, position, item.keys)
        record_id = existing
    else:
        record_id = -(len(batch.new_records) + 1)
        batch.new_records[record_id] = _New(
            row={
                "record_key": event.key,
                "person_key": person,
                "institution_code": institution,
                "identity": token,
                "created_at": now,
                "updated_at": now,
            },
            digests=digests,
            possible=[(s.record_id, s.probability) for s in decision.possible],
            position=position,
            keys=item.keys,
        )
        batch.known[record_id] = _Known(record_id, person, institution, token, position)
        batch.by_key[event.key] = record_id
        _count(batch, person, +1)
    for h in item.keys:
        ids = batch.added.setdefault(h, [])
        if record_id not in ids:
            ids.append(record_id)

    if hit is not None:
        batch.hits.append(hit.id)
        # a person that existed before this record has been forwarded downstream
        batch.applied.append((person, hit, bool(persons)))
        scope = hit.institution_code or ALL_INSTITUTIONS
        batch.blocks.setdefault(person, set()).add(scope)
        if hit.action == "stop_and_delete":
            for known in batch.known.values():
                if known.person == person and scope in (ALL_INSTITUTIONS, known.institution):
                    known.deleted = True
        return Outcome.OPTED_OUT

    pseudonym = ctx.pseudonym(person)
    await batch.tx.emit(
        Event(
            type=RECORD_LINKED,
            source=SOURCE,
            key=pseudonym,
            data=RecordLinkedV1(
                person=pseudonym,
                institution_code=institution,
                submission_id=event.data.submission_id,
                linked_at=now,
                demographics=Demographics(**demographics(identity)),
                resources=strip_resources(
                    item.resources,
                    pseudonym=pseudonym,
                    hash_id=lambda kind, local: ctx.resource_id(institution, kind, local),
                ),
                merged_from=merged_from,
            ),
        )
    )
    return Outcome.LINKED


def _count(batch: _Batch, person: str, delta: int) -> None:
    batch.new_of[person] += delta
    if person in batch.counts:
        batch.counts[person] += delta


async def _record_counts(batch: _Batch, persons: Sequence[str]) -> dict[str, int]:
    """Records per person as they stand in this batch (the survivor of a merge is the person
    with most records): the vault's count plus the batch's changes."""
    missing = [p for p in persons if p not in batch.counts]
    if missing:
        stored = await vault.record_counts(batch.conn, missing)
        for p in missing:
            batch.counts[p] = stored[p] + batch.new_of[p]
    return {p: batch.counts[p] for p in persons}


def _block_entry_hit(
    batch: _Batch, normalized: Normalized, digests: Sequence[str], institution: str
) -> BlockEntry | None:
    ctx = batch.ctx
    seen: set[int] = set()
    for d in digests:
        for entry in batch.entries.get(d, ()):
            if entry.id in seen or entry.institution_code not in (None, institution):
                continue
            seen.add(entry.id)
            subject = ctx.normalized(entry.subject, context=BLOCK_SUBJECT)
            if ctx.model.probability(subject, normalized) >= ctx.strict_threshold:
                return entry
    return None


async def _write(batch: _Batch) -> None:
    """The batch's effects, in an order that keeps every step's references valid; the change
    feed gets a row per identity put (the index takes them once the transaction committed)."""
    ctx, conn, now = batch.ctx, batch.conn, batch.ctx.clock()
    await vault.add_persons(conn, batch.new_persons)
    pending = list(batch.new_records.items())
    ids = await vault.add_records(conn, [n.row for _, n in pending])
    real = {temp: db_id for (temp, _), db_id in zip(pending, ids, strict=True)}
    key_digests: list[str] = []
    key_records: list[int] = []
    for temp, n in pending:
        key_digests.extend(n.digests)
        key_records.extend([real[temp]] * len(n.digests))
    await vault.add_blocking_key_arrays(conn, key_digests, key_records)
    await vault.add_possible_link_rows(
        conn,
        [
            {
                "record_id": real[temp],
                "other_record_id": real.get(other, other),
                "probability": p,
                "status": "open",
                "created_at": now,
            }
            for temp, n in pending
            for other, p in n.possible
        ],
    )
    for record_id, (token, digests, _, _) in batch.replaced.items():
        await vault.replace_identity(
            conn,
            record_id,
            person_key=batch.known[record_id].person,
            identity=token,
            digests=digests,
            at=now,
        )
    kinds = ["add"] * len(pending) + ["replace"] * len(batch.replaced)
    puts = [(real[temp], n.position, n.keys) for temp, n in pending]
    puts.extend((r, position, keys) for r, (_, _, position, keys) in batch.replaced.items())
    await batch.session.put(conn, kinds, puts)
    for into, absorbed in batch.merges:
        await vault.merge_persons(conn, into, absorbed)
    for entry_id in batch.hits:
        await vault.count_block_hit(conn, entry_id)
    for person, entry, notify in batch.applied:
        await apply_block(
            ctx,
            batch.tx,
            conn,
            person,
            optout_id=entry.optout_id,
            action=entry.action,
            institution_code=entry.institution_code,
            notify=notify,
        )


async def apply_block(
    ctx: Linkage,
    tx: Transaction,
    conn: AsyncConnection,
    person_key: str,
    *,
    optout_id: str,
    action: str,
    institution_code: str | None,
    notify: bool,
) -> int:
    """Block a person (for one institution or all); for `stop_and_delete` delete their vault
    records in that scope. Emits `person-purged` when `notify`. Returns the records deleted."""
    await vault.block_person(
        conn,
        person_key,
        institution_code=institution_code,
        optout_id=optout_id,
        action=action,
        at=ctx.clock(),
    )
    deleted = 0
    if action == "stop_and_delete":
        rows = await vault.delete_person_records(
            conn, person_key, institution_code=institution_code
        )
        ctx.cache.discard(token for _, token in rows)
        # out of the index (and its vocabularies) once this transaction has committed
        await (await hold(ctx, tx)).deleted(conn, [record_id for record_id, _ in rows])
        deleted = len(rows)
    if notify:
        pseudonym = ctx.pseudonym(person_key)
        extra: dict[str, Any] = {}
        if institution_code is not None:
            extra["institution_code"] = institution_code  # extension: a scoped opt-out
        await tx.emit(
            Event(
                type=PERSON_PURGED,
                source=SOURCE,
                key=pseudonym,
                data=PersonPurgedV1(
                    person=pseudonym, optout_id=optout_id, action=cast(Action, action), **extra
                ),
            )
        )
    return deleted


class PendingRecords:
    """The records of the runner's current batch, linked together just before it commits.

    The runner calls handlers one event at a time inside one transaction; the first record of
    a transaction registers `flush` as the transaction's before-commit step to link the whole
    batch there. A handler of another event type calls `flush` first, so everything stays in
    arrival order. If the batch fails, the runner rolls it back and retries event by event,
    each in its own transaction, which isolates a poison event as usual.
    """

    _STATE = "kiban_linkage.pending"

    def __init__(self, ctx: Linkage, tx: Transaction) -> None:
        self.ctx = ctx
        self.tx = tx
        self.events: list[Event[RecordReceivedV1]] = []
        tx.before_commit(self.flush)

    @classmethod
    def of(cls, ctx: Linkage, tx: Transaction) -> PendingRecords:
        pending: PendingRecords | None = tx.state.get(cls._STATE)
        if pending is None:
            pending = tx.state[cls._STATE] = cls(ctx, tx)
        return pending

    @classmethod
    async def flush_of(cls, tx: Transaction) -> None:
        pending: PendingRecords | None = tx.state.get(cls._STATE)
        if pending is not None:
            await pending.flush()

    async def flush(self) -> None:
        if self.events:
            events, self.events = self.events, []
            await link_records(self.ctx, self.tx, events)
