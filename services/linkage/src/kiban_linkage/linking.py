"""Incremental linking of `record-received` events (convention 1 in, convention 4 out).

The consumer runner applies a batch of events in one transaction; the records of a batch are
linked together (`link_records`) so a batch costs a handful of round trips, not several per
record. For each record, in arrival order:

1. Open the identity and the resources; normalize the identity; blind-index its blocking keys.
2. Candidates: vault records sharing a key (those sharing the most keys first, capped), plus
   the same institution patient; the records linked earlier in the batch count too.
3. Score every candidate with the model in force; link at the link threshold, record the
   "possible" band for review (never linked).
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
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.domain.demographics import demographics
from kiban_linkage.domain.matching import (
    Columns,
    Normalized,
    identity_from_mapping,
    normalize,
    score_pairs,
)
from kiban_linkage.domain.persons import Scored, decide_link, new_person_key, survivor
from kiban_linkage.domain.stripping import strip_resources
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
    """A vault record as this batch sees it (id < 0: inserted by this batch)."""

    id: int
    person: str
    institution: str
    token: str
    deleted: bool = False
    # the normalized identity behind `token`, once this batch needed it (set with the token)
    normalized: Normalized | None = None

    def identity(self, ctx: Linkage) -> Normalized:
        if self.normalized is None:
            self.normalized = ctx.normalized(self.token)
        return self.normalized


@dataclass
class _New:
    row: dict[str, Any]
    digests: list[str]
    possible: list[tuple[int, float]]


@dataclass
class _Batch:
    ctx: Linkage
    tx: Transaction
    known: dict[int, _Known] = field(default_factory=dict)
    by_digest: dict[str, list[int]] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    blocks: dict[str, set[str]] = field(default_factory=dict)
    entries: dict[str, list[BlockEntry]] = field(default_factory=dict)
    new_persons: list[dict[str, Any]] = field(default_factory=list)
    new_records: dict[int, _New] = field(default_factory=dict)
    replaced: dict[int, tuple[str, list[str]]] = field(default_factory=dict)
    merges: list[tuple[str, list[str]]] = field(default_factory=list)
    applied: list[tuple[str, BlockEntry, bool]] = field(default_factory=list)
    hits: list[int] = field(default_factory=list)
    # per record of the batch: id(candidate Normalized) -> (that object, probability)
    scores: list[dict[int, tuple[Normalized, float]]] = field(default_factory=list)

    def probability(self, k: int, normalized: Normalized, other: Normalized) -> float:
        """Record k's probability against `other`: scored with the batch (`_prescore`) when
        it was among the candidates foreseen, else scored now (same function, same value)."""
        got = self.scores[k].get(id(other)) if k < len(self.scores) else None
        if got is not None and got[0] is other:
            return got[1]
        return self.ctx.model.probability(normalized, other)

    def blocked(self, person: str, institution: str) -> bool:
        scopes = self.blocks.get(person, ())
        return ALL_INSTITUTIONS in scopes or institution in scopes

    def candidates(self, digests: Sequence[str]) -> list[int]:
        shared: Counter[int] = Counter()
        for d in digests:
            shared.update(self.by_digest.get(d, ()))
        ranked = sorted(shared, key=lambda i: (-shared[i], -i))
        live = (i for i in ranked if not self.known[i].deleted)
        return [i for _, i in zip(range(self.ctx.options.max_candidates), live, strict=False)]


async def link_record(ctx: Linkage, tx: Transaction, event: Event[RecordReceivedV1]) -> Outcome:
    """One record alone (see `link_records`)."""
    return (await link_records(ctx, tx, [event]))[0]


async def link_records(
    ctx: Linkage, tx: Transaction, events: Sequence[Event[RecordReceivedV1]]
) -> list[Outcome]:
    """Link `events` in order within the caller's transaction; returns each one's outcome."""
    conn = await tx.session.connection()
    await ctx.ensure_model(conn)
    opened = [_open(ctx, e) for e in events]
    batch = _Batch(ctx, tx)
    await _load(batch, conn, opened)
    batch.scores = _prescore(batch, opened)
    outcomes = [await _link_one(batch, position, *item) for position, item in enumerate(opened)]
    await _write(batch, conn)
    return outcomes


_Opened = tuple[
    Event[RecordReceivedV1], dict[str, Any], list[dict[str, Any]], Normalized, list[str]
]


def _open(ctx: Linkage, event: Event[RecordReceivedV1]) -> _Opened:
    data = event.data
    identity = ctx.cipher.decrypt_json(data.identity, context=RECORD_RECEIVED_IDENTITY)
    content = ctx.cipher.decrypt_json(data.resources, context=RECORD_RECEIVED_RESOURCES)
    resources = [r for r in content.get("resources", []) if isinstance(r, dict)]
    normalized = normalize(identity_from_mapping(identity))
    return event, identity, resources, normalized, ctx.digests(normalized)


async def _load(batch: _Batch, conn: AsyncConnection, opened: Sequence[_Opened]) -> None:
    """Everything the batch's records can meet, in four queries."""
    digests = {d for item in opened for d in item[4]}
    # a key shared by more than `max_block` records says nothing: left out
    batch.by_digest = await vault.blocks(conn, digests, max_block=batch.ctx.options.max_block)
    ids = {i for ids in batch.by_digest.values() for i in ids}
    rows = await vault.records_by(conn, ids, [item[0].key for item in opened])
    for r in rows:
        batch.known[r.id] = _Known(r.id, r.person_key, r.institution_code, r.identity)
        batch.by_key[r.record_key] = r.id
    batch.blocks = await vault.blocks_of(conn, {r.person_key for r in rows})
    for digest, entry in await vault.block_entries_for(conn, digests):
        batch.entries.setdefault(digest, []).append(entry)


def _prescore(
    batch: _Batch, opened: Sequence[_Opened]
) -> list[dict[int, tuple[Normalized, float]]]:
    """Score the batch's foreseeable candidate pairs at once (the vectorized comparison of
    `kiban link`) instead of one scalar `probability` per pair in `_link_one`: for each record,
    the loaded vault records sharing a blocking key (ranked and capped as `candidates` does)
    and the earlier records of the batch sharing one. Anything `_link_one` meets beyond these
    (a record replaced or deleted earlier in the batch) is scored there as before."""
    ctx = batch.ctx
    limit = ctx.options.max_candidates
    objects: dict[int, Normalized] = {}  # id -> object, kept alive while scoring
    left: list[int] = []
    right: list[int] = []
    earlier: dict[str, list[int]] = {}  # digest -> batch positions seen so far
    for k, (_, _, _, normalized, digests) in enumerate(opened):
        objects[id(normalized)] = normalized
        shared: Counter[int] = Counter()
        for d in digests:
            shared.update(batch.by_digest.get(d, ()))
        ranked = sorted(shared, key=lambda i: (-shared[i], -i))[:limit]
        others = {id(o): o for o in (batch.known[i].identity(ctx) for i in ranked)}
        for d in digests:
            for j in earlier.get(d, ()):
                o = opened[j][3]
                others[id(o)] = o
            earlier.setdefault(d, []).append(k)
        for key, o in others.items():
            objects[key] = o
            left.append(id(normalized))
            right.append(key)
    out: list[dict[int, tuple[Normalized, float]]] = [{} for _ in opened]
    if not left:
        return out
    position = {key: p for p, key in enumerate(objects)}
    records = list(objects.values())
    ia = np.asarray([position[key] for key in left], dtype=np.int64)
    ib = np.asarray([position[key] for key in right], dtype=np.int64)
    probabilities = score_pairs(ctx.model, Columns.build(records), ia, ib).tolist()
    owner = {id(item[3]): k for k, item in enumerate(opened)}
    for a, b, p in zip(left, right, probabilities, strict=True):
        out[owner[a]][b] = (objects[b], p)
    return out


async def _link_one(
    batch: _Batch,
    position: int,
    event: Event[RecordReceivedV1],
    identity: dict[str, Any],
    resources: list[dict[str, Any]],
    normalized: Normalized,
    digests: list[str],
) -> Outcome:
    ctx = batch.ctx
    institution = event.data.institution_code
    existing = batch.by_key.get(event.key)
    if existing is not None and batch.known[existing].deleted:
        existing = None
    scored = [
        Scored(i, known.person, batch.probability(position, normalized, known.identity(ctx)))
        for i in batch.candidates(digests)
        if i != existing and (known := batch.known[i])
    ]
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
    elif len(persons) == 1:
        person = persons[0]
    else:
        counts = Counter(k.person for k in batch.known.values() if not k.deleted)
        person = survivor((p, counts[p]) for p in persons)
        absorbed = [p for p in persons if p != person]
        batch.merges.append((person, absorbed))
        for k in batch.known.values():
            if k.person in absorbed:
                k.person = person
        merged_from = [ctx.pseudonym(p) for p in absorbed]

    token = ctx.seal_identity(identity)
    ctx.cache.put(token, normalized)
    if existing is not None:
        known = batch.known[existing]
        ctx.cache.discard([known.token])
        known.person, known.token, known.normalized = person, token, normalized
        if existing < 0:
            pending = batch.new_records[existing]
            pending.row.update(identity=token, person_key=person)
            pending.digests = digests
        else:
            batch.replaced[existing] = (token, digests)
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
        )
        batch.known[record_id] = _Known(record_id, person, institution, token, False, normalized)
        batch.by_key[event.key] = record_id
    for d in digests:
        ids = batch.by_digest.setdefault(d, [])
        if record_id not in ids:
            ids.append(record_id)

    if hit is not None:
        batch.hits.append(hit.id)
        # a person that existed before this record has been forwarded downstream
        batch.applied.append((person, hit, bool(persons)))
        scope = hit.institution_code or ALL_INSTITUTIONS
        batch.blocks.setdefault(person, set()).add(scope)
        if hit.action == "stop_and_delete":
            for k in batch.known.values():
                if k.person == person and scope in (ALL_INSTITUTIONS, k.institution):
                    k.deleted = True
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
                    resources,
                    pseudonym=pseudonym,
                    hash_id=lambda kind, local: ctx.resource_id(institution, kind, local),
                ),
                merged_from=merged_from,
            ),
        )
    )
    return Outcome.LINKED


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


async def _write(batch: _Batch, conn: AsyncConnection) -> None:
    """The batch's effects, in an order that keeps every step's references valid."""
    ctx, now = batch.ctx, batch.ctx.clock()
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
    for record_id, (token, digests) in batch.replaced.items():
        await vault.replace_identity(
            conn,
            record_id,
            person_key=batch.known[record_id].person,
            identity=token,
            digests=digests,
            at=now,
        )
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
        tokens = await vault.delete_person_records(
            conn, person_key, institution_code=institution_code
        )
        ctx.cache.discard(tokens)
        deleted = len(tokens)
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
