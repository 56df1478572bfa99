"""Before the decisions: open the batch's records, score their candidates in memory at once,
and load from the vault what the decisions need."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from kiban_common.events import (
    Event,
    RecordReceivedV1,
)
from kiban_linkage.context import (
    BLOCKING,
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.domain.matching import (
    blocking_keys,
    identity_from_mapping,
    normalize,
)
from kiban_linkage.linking._batch import Batch, Known, Opened
from kiban_linkage.store import vault


def open_record(ctx: Linkage, event: Event[RecordReceivedV1]) -> Opened:
    data = event.data
    identity = ctx.cipher.decrypt_json(data.identity, context=RECORD_RECEIVED_IDENTITY)
    content = ctx.cipher.decrypt_json(data.resources, context=RECORD_RECEIVED_RESOURCES)
    resources = [r for r in content.get("resources", []) if isinstance(r, dict)]
    normalized = normalize(identity_from_mapping(identity))
    keys = sorted(set(blocking_keys(normalized)))
    digests = [ctx.index.digest(k, context=BLOCKING) for k in keys]
    return Opened(event, identity, resources, normalized, digests, [hash(k) for k in keys])


def prescore(batch: Batch, opened: Sequence[Opened]) -> None:
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


async def load(batch: Batch, opened: Sequence[Opened]) -> None:
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
    await know(batch, ids, [item.event.key for item in opened])
    digests = {d for item in opened for d in item.digests}
    for digest, entry in await vault.block_entries_for(batch.conn, digests):
        batch.entries.setdefault(digest, []).append(entry)


async def know(batch: Batch, ids: set[int], record_keys: Sequence[str] = ()) -> None:
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
        batch.known[r.id] = Known(
            r.id, person, r.institution_code, r.identity, position, position is None
        )
        batch.by_key.setdefault(r.record_key, r.id)
        persons.add(person)
    for person, scopes in (await vault.blocks_of(batch.conn, persons)).items():
        batch.blocks.setdefault(person, set()).update(scopes)
