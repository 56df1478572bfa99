"""Linking a batch: each record decided in arrival order, then the batch's effects written."""

from __future__ import annotations

from collections.abc import Sequence

from kiban_common.events import (
    Event,
    RecordReceivedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import (
    BLOCK_SUBJECT,
    Linkage,
)
from kiban_linkage.domain.linked import record_linked
from kiban_linkage.domain.matching import (
    Normalized,
)
from kiban_linkage.domain.persons import Scored, decide_link, new_person_key, survivor
from kiban_linkage.domain.stripping import strip_resources
from kiban_linkage.linking._batch import Batch, Known, NewRecord, Opened, Outcome
from kiban_linkage.linking._gather import know, load, open_record, prescore
from kiban_linkage.linking._purge import apply_block
from kiban_linkage.replica import hold
from kiban_linkage.store import vault
from kiban_linkage.store.vault import ALL_INSTITUTIONS, BlockEntry


async def link_record(ctx: Linkage, tx: Transaction, event: Event[RecordReceivedV1]) -> Outcome:
    """One record alone (see `link_records`)."""
    return (await link_records(ctx, tx, [event]))[0]


async def link_records(
    ctx: Linkage, tx: Transaction, events: Sequence[Event[RecordReceivedV1]]
) -> list[Outcome]:
    """Link `events` in order within the caller's transaction; returns each one's outcome."""
    conn = await tx.session.connection()
    opened = [open_record(ctx, e) for e in events]  # before the lock: replicas do this in parallel
    session = await hold(ctx, tx)  # the vault lock; the index is up to date
    await ctx.ensure_model(conn)
    base = ctx.replica.index.stage([item.normalized for item in opened])
    batch = Batch(ctx, tx, conn, session, base)
    prescore(batch, opened)
    await load(batch, opened)
    outcomes = [await _link_one(batch, k, item) for k, item in enumerate(opened)]
    await _write(batch)
    return outcomes


async def _link_one(batch: Batch, k: int, item: Opened) -> Outcome:
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
    await know(batch, {i for _, i, _ in probable})
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
        batch.new_records[record_id] = NewRecord(
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
        batch.known[record_id] = Known(record_id, person, institution, token, position)
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
        record_linked(
            pseudonym=pseudonym,
            institution_code=institution,
            submission_id=event.data.submission_id,
            at=now,
            identity=identity,
            resources=strip_resources(
                item.resources,
                pseudonym=pseudonym,
                hash_id=lambda kind, local: ctx.resource_id(institution, kind, local),
            ),
            merged_from=merged_from,
        )
    )
    return Outcome.LINKED


def _count(batch: Batch, person: str, delta: int) -> None:
    batch.new_of[person] += delta
    if person in batch.counts:
        batch.counts[person] += delta


async def _record_counts(batch: Batch, persons: Sequence[str]) -> dict[str, int]:
    """Records per person as they stand in this batch (the survivor of a merge is the person
    with most records): the vault's count plus the batch's changes."""
    missing = [p for p in persons if p not in batch.counts]
    if missing:
        stored = await vault.record_counts(batch.conn, missing)
        for p in missing:
            batch.counts[p] = stored[p] + batch.new_of[p]
    return {p: batch.counts[p] for p in persons}


def _block_entry_hit(
    batch: Batch, normalized: Normalized, digests: Sequence[str], institution: str
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


async def _write(batch: Batch) -> None:
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
