"""Every query of the linkage service. Functions take the transaction's connection; the caller
owns the transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_linkage.store.tables import (
    block_entries,
    block_keys,
    blocking_keys,
    models,
    operator_log,
    optout_reviews,
    person_blocks,
    persons,
    possible_links,
    records,
    vault_changes,
    vault_state,
)

ALL_INSTITUTIONS = ""  # `person_blocks.institution_code` of an opt-out with scope "all"


@dataclass(frozen=True)
class VaultRecord:
    id: int
    record_key: str
    person_key: str
    institution_code: str
    identity: str  # field-cipher token


@dataclass(frozen=True)
class BlockEntry:
    id: int
    optout_id: str
    action: str
    institution_code: str | None
    subject: str  # field-cipher token


def _sharing(digests: Sequence[str], limit: int) -> Any:
    """Ids of the records sharing a blocking key, those sharing the most keys first, capped:
    a very common name then costs `limit` comparisons, and the true match (which shares the
    birth-date, postal and insurance keys too) ranks first."""
    return (
        select(blocking_keys.c.record_id)
        .where(blocking_keys.c.digest.in_(digests))
        .group_by(blocking_keys.c.record_id)
        .order_by(func.count().desc(), blocking_keys.c.record_id.desc())
        .limit(limit)
        .scalar_subquery()
    )


async def record_candidates(
    conn: AsyncConnection, digests: Sequence[str], *, institution_code: str | None, limit: int
) -> list[VaultRecord]:
    """Vault records sharing a blocking key, optionally of one institution only."""
    by_key = _sharing(digests, limit)
    query = select(records).where(records.c.id.in_(by_key))
    if institution_code is not None:
        query = query.where(records.c.institution_code == institution_code)
    return [_record(r) for r in (await conn.execute(query)).mappings()]


async def record_by_key(conn: AsyncConnection, record_key: str) -> VaultRecord | None:
    row = (
        (await conn.execute(select(records).where(records.c.record_key == record_key)))
        .mappings()
        .first()
    )
    return _record(row) if row else None


def _record(row: Any) -> VaultRecord:
    return VaultRecord(
        row["id"], row["record_key"], row["person_key"], row["institution_code"], row["identity"]
    )


# Persons ------------------------------------------------------------------------------------


async def add_person(conn: AsyncConnection, person_key: str, pseudonym: str, at: datetime) -> None:
    await conn.execute(
        insert(persons).values(person_key=person_key, pseudonym=pseudonym, created_at=at)
    )


async def person(conn: AsyncConnection, key: str) -> dict[str, Any] | None:
    """A person by person key or pseudonym."""
    row = (
        (
            await conn.execute(
                select(persons).where(or_(persons.c.person_key == key, persons.c.pseudonym == key))
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def record_counts(conn: AsyncConnection, person_keys: Iterable[str]) -> dict[str, int]:
    keys = list(person_keys)
    rows = await conn.execute(
        select(records.c.person_key, func.count())
        .where(records.c.person_key.in_(keys))
        .group_by(records.c.person_key)
    )
    counts = dict.fromkeys(keys, 0)
    counts.update({k: int(n) for k, n in rows})
    return counts


async def person_records(conn: AsyncConnection, person_key: str) -> list[VaultRecord]:
    rows = await conn.execute(
        select(records).where(records.c.person_key == person_key).order_by(records.c.id)
    )
    return [_record(r) for r in rows.mappings()]


async def merge_persons(conn: AsyncConnection, into: str, absorbed: Sequence[str]) -> None:
    await conn.execute(
        update(records).where(records.c.person_key.in_(absorbed)).values(person_key=into)
    )
    await conn.execute(delete(persons).where(persons.c.person_key.in_(absorbed)))


async def move_records(conn: AsyncConnection, record_ids: Sequence[int], person_key: str) -> None:
    await conn.execute(
        update(records).where(records.c.id.in_(record_ids)).values(person_key=person_key)
    )


async def person_blocks_of(conn: AsyncConnection, person_key: str) -> list[dict[str, Any]]:
    rows = await conn.execute(select(person_blocks).where(person_blocks.c.person_key == person_key))
    return [dict(r) for r in rows.mappings()]


async def block_person(
    conn: AsyncConnection,
    person_key: str,
    *,
    institution_code: str | None,
    optout_id: str,
    action: str,
    at: datetime,
) -> None:
    scope = institution_code or ALL_INSTITUTIONS
    already = await conn.execute(
        select(person_blocks.c.person_key).where(
            person_blocks.c.person_key == person_key, person_blocks.c.institution_code == scope
        )
    )
    if already.first() is None:
        await conn.execute(
            insert(person_blocks).values(
                person_key=person_key,
                institution_code=scope,
                optout_id=optout_id,
                action=action,
                blocked_at=at,
            )
        )


# The vault ----------------------------------------------------------------------------------


async def replace_identity(
    conn: AsyncConnection,
    record_id: int,
    *,
    person_key: str,
    identity: str,
    digests: Sequence[str],
    at: datetime,
) -> None:
    await conn.execute(
        update(records)
        .where(records.c.id == record_id)
        .values(identity=identity, person_key=person_key, updated_at=at)
    )
    await conn.execute(delete(blocking_keys).where(blocking_keys.c.record_id == record_id))
    if digests:
        await conn.execute(
            insert(blocking_keys), [{"digest": d, "record_id": record_id} for d in digests]
        )


async def delete_person_records(
    conn: AsyncConnection, person_key: str, *, institution_code: str | None
) -> list[tuple[int, str]]:
    """Delete a person's vault records (of one institution, or all) with their blind indexes
    and review pairs; returns the deleted (record id, identity token) pairs (to evict them from
    memory)."""
    where = [records.c.person_key == person_key]
    if institution_code is not None:
        where.append(records.c.institution_code == institution_code)
    rows = (await conn.execute(select(records.c.id, records.c.identity).where(*where))).all()
    ids = [r.id for r in rows]
    if ids:
        await conn.execute(delete(blocking_keys).where(blocking_keys.c.record_id.in_(ids)))
        await conn.execute(
            delete(possible_links).where(
                or_(possible_links.c.record_id.in_(ids), possible_links.c.other_record_id.in_(ids))
            )
        )
        await conn.execute(delete(records).where(records.c.id.in_(ids)))
    return [(int(r.id), r.identity) for r in rows]


# Possible links -----------------------------------------------------------------------------


async def possible_links_page(
    conn: AsyncConnection, *, status: str, limit: int
) -> list[dict[str, Any]]:
    a, b = records.alias("a"), records.alias("b")
    rows = await conn.execute(
        select(
            possible_links,
            a.c.person_key.label("person"),
            b.c.person_key.label("other_person"),
        )
        .join(a, a.c.id == possible_links.c.record_id)
        .join(b, b.c.id == possible_links.c.other_record_id)
        .where(possible_links.c.status == status)
        .order_by(possible_links.c.id)
        .limit(limit)
    )
    return [dict(r) for r in rows.mappings()]


async def possible_link(conn: AsyncConnection, link_id: int) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(possible_links).where(possible_links.c.id == link_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def decide_possible_link(
    conn: AsyncConnection, link_id: int, *, status: str, by: str, at: datetime
) -> None:
    await conn.execute(
        update(possible_links)
        .where(possible_links.c.id == link_id)
        .values(status=status, decided_by=by, decided_at=at)
    )


async def record_ids(conn: AsyncConnection, ids: Sequence[int]) -> list[VaultRecord]:
    rows = await conn.execute(select(records).where(records.c.id.in_(ids)))
    return [_record(r) for r in rows.mappings()]


# Block entries and opt-out reviews ----------------------------------------------------------


async def add_block_entry(
    conn: AsyncConnection,
    *,
    optout_id: str,
    action: str,
    institution_code: str | None,
    subject: str,
    digests: Sequence[str],
    matched_persons: int,
    at: datetime,
) -> None:
    result = await conn.execute(
        insert(block_entries)
        .values(
            optout_id=optout_id,
            action=action,
            institution_code=institution_code,
            subject=subject,
            created_at=at,
            matched_persons=matched_persons,
            applied_records=0,
        )
        .returning(block_entries.c.id)
    )
    entry_id = int(result.scalar_one())
    if digests:
        await conn.execute(
            insert(block_keys), [{"digest": d, "entry_id": entry_id} for d in digests]
        )


async def block_entry_matched(conn: AsyncConnection, optout_id: str) -> int | None:
    """The persons an already applied opt-out matched, or None if it was not applied."""
    row = await conn.execute(
        select(block_entries.c.matched_persons).where(block_entries.c.optout_id == optout_id)
    )
    value = row.scalar_one_or_none()
    return None if value is None else int(value)


async def count_block_hit(conn: AsyncConnection, entry_id: int) -> None:
    await conn.execute(
        update(block_entries)
        .where(block_entries.c.id == entry_id)
        .values(applied_records=block_entries.c.applied_records + 1)
    )


async def add_optout_review(conn: AsyncConnection, **values: Any) -> None:
    await conn.execute(insert(optout_reviews).values(status="open", **values))


async def optout_review(conn: AsyncConnection, optout_id: str) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(optout_reviews).where(optout_reviews.c.optout_id == optout_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def optout_reviews_page(conn: AsyncConnection, *, status: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(optout_reviews)
        .where(optout_reviews.c.status == status)
        .order_by(optout_reviews.c.received_at)
    )
    return [dict(r) for r in rows.mappings()]


async def resolve_optout_review(
    conn: AsyncConnection, optout_id: str, *, by: str, at: datetime
) -> bool:
    """Mark an open review resolved; False if it was not open (resolved concurrently)."""
    result = await conn.execute(
        update(optout_reviews)
        .where(and_(optout_reviews.c.optout_id == optout_id, optout_reviews.c.status == "open"))
        .values(status="resolved", resolved_by=by, resolved_at=at)
    )
    return bool(result.rowcount)


# Models, statistics, operator log -----------------------------------------------------------


async def latest_model(conn: AsyncConnection) -> dict[str, Any] | None:
    row = (
        (await conn.execute(select(models).order_by(models.c.id.desc()).limit(1)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def save_model(conn: AsyncConnection, *, params: str, records_: int, at: datetime) -> int:
    result = await conn.execute(
        insert(models).values(params=params, records=records_, fitted_at=at).returning(models.c.id)
    )
    return int(result.scalar_one())


async def count_records(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(records))).scalar_one())


async def identity_page(
    conn: AsyncConnection, *, before: int | None, limit: int
) -> list[tuple[int, str]]:
    """(id, identity token) of up to `limit` records with an id below `before`, newest first."""
    query = select(records.c.id, records.c.identity).order_by(records.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(records.c.id < before)
    return [(int(i), t) for i, t in await conn.execute(query)]


async def sample_identities(conn: AsyncConnection, limit: int) -> list[str]:
    """Identity tokens of up to `limit` records spread over the vault (every n-th id)."""
    total = await count_records(conn)
    step = max(1, total // limit)
    query = select(records.c.identity).order_by(records.c.id)
    if step > 1:
        query = query.where(records.c.id % step == 0)
    rows = await conn.execute(query.limit(limit))
    return [r[0] for r in rows]


async def stats(conn: AsyncConnection) -> dict[str, int]:
    def count(query: Any) -> Any:
        return query.scalar_subquery()

    row = (
        await conn.execute(
            select(
                count(select(func.count()).select_from(persons)).label("persons"),
                count(select(func.count()).select_from(records)).label("records"),
                count(select(func.count(func.distinct(records.c.person_key)))).label("linked"),
                count(select(func.count(func.distinct(person_blocks.c.person_key)))).label(
                    "blocked"
                ),
                count(select(func.count()).select_from(block_entries)).label("block_entries"),
                count(
                    select(func.count())
                    .select_from(possible_links)
                    .where(possible_links.c.status == "open")
                ).label("possible_open"),
                count(
                    select(func.count())
                    .select_from(optout_reviews)
                    .where(optout_reviews.c.status == "open")
                ).label("optout_reviews_open"),
            )
        )
    ).one()
    return {
        "persons": int(row.persons),
        "records": int(row.records),
        # records joined to a person that already had one: records minus persons holding any
        "links": int(row.records) - int(row.linked),
        "blocked": int(row.blocked),
        "block_entries": int(row.block_entries),
        "possible_open": int(row.possible_open),
        "optout_reviews_open": int(row.optout_reviews_open),
    }


async def log_operator(
    conn: AsyncConnection,
    *,
    principal: str,
    action: str,
    person_key: str | None,
    detail: dict[str, Any],
    at: datetime,
) -> None:
    await conn.execute(
        insert(operator_log).values(
            at=at, principal=principal, action=action, person_key=person_key, detail=detail
        )
    )


# Batch lookups (the streaming path) ---------------------------------------------------------

_CHUNK = 5_000  # bound parameters per statement, well under the drivers' limits


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _one_of(conn: AsyncConnection, column: Any, values: Sequence[Any]) -> Any:
    """`column IN values`; on PostgreSQL one array parameter (`= ANY`), which spares compiling
    and binding thousands of parameters per batch."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


_VAULT_COLUMNS = (
    records.c.id,
    records.c.record_key,
    records.c.person_key,
    records.c.institution_code,
    records.c.identity,
)


async def records_by(
    conn: AsyncConnection, ids: Iterable[int], record_keys: Iterable[str]
) -> list[VaultRecord]:
    """Vault records by id or by record key (only the columns a `VaultRecord` holds: at a 1M
    index a batch loads tens of thousands of candidates, and decoding two timestamps per row
    and a mapping per row was most of this query's CPU)."""
    found: dict[int, VaultRecord] = {}
    for column, values in ((records.c.id, ids), (records.c.record_key, record_keys)):
        for chunk in _chunks(sorted(set(values))):
            query = select(*_VAULT_COLUMNS).where(_one_of(conn, column, chunk))
            for row in await conn.execute(query):
                found[row[0]] = VaultRecord(*row)
    return list(found.values())


async def blocks_of(conn: AsyncConnection, person_keys: Iterable[str]) -> dict[str, set[str]]:
    """Person → institutions it is blocked for (`ALL_INSTITUTIONS` = every one)."""
    out: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(set(person_keys))):
        rows = await conn.execute(
            select(person_blocks.c.person_key, person_blocks.c.institution_code).where(
                _one_of(conn, person_blocks.c.person_key, chunk)
            )
        )
        for person_key, institution in rows:
            out.setdefault(person_key, set()).add(institution)
    return out


async def block_entries_for(
    conn: AsyncConnection, digests: Iterable[str]
) -> list[tuple[str, BlockEntry]]:
    """(digest, entry) for every block entry indexed under one of `digests`."""
    out: list[tuple[str, BlockEntry]] = []
    for chunk in _chunks(sorted(set(digests))):
        rows = await conn.execute(
            select(block_keys.c.digest, block_entries)
            .join(block_entries, block_entries.c.id == block_keys.c.entry_id)
            .where(_one_of(conn, block_keys.c.digest, chunk))
        )
        for row in rows.mappings():
            entry = BlockEntry(
                row["id"], row["optout_id"], row["action"], row["institution_code"], row["subject"]
            )
            out.append((row["digest"], entry))
    return out


async def add_persons(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(insert(persons), list(rows))
        return
    # One statement with one array per column, as `add_records` (no per-row parameters).
    await conn.execute(
        text(
            "INSERT INTO linkage_persons (person_key, pseudonym, created_at) SELECT * FROM "
            "unnest(CAST(:keys AS varchar[]), CAST(:pseudonyms AS varchar[]), "
            "CAST(:created AS timestamptz[]))"
        ),
        {
            "keys": [r["person_key"] for r in rows],
            "pseudonyms": [r["pseudonym"] for r in rows],
            "created": [r["created_at"] for r in rows],
        },
    )


_RECORD_COLUMNS = (
    ("record_key", "varchar"),
    ("person_key", "varchar"),
    ("institution_code", "varchar"),
    ("identity", "text"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


async def add_records(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert vault records (without their blind indexes); their ids in the rows' order."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        result = await conn.execute(
            insert(records).returning(records.c.id, sort_by_parameter_order=True), list(rows)
        )
        return [int(i) for i in result.scalars()]
    # One statement with one array per column (`unnest`), ids matched back by record key.
    names = ", ".join(name for name, _ in _RECORD_COLUMNS)
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _RECORD_COLUMNS)
    # Only the fixed column names above are formatted in; every value is a bound parameter.
    statement = text(
        f"INSERT INTO linkage_records ({names}) SELECT * FROM unnest({arrays}) "  # noqa: S608
        "RETURNING id, record_key"
    )
    params = {name: [row[name] for row in rows] for name, _ in _RECORD_COLUMNS}
    ids = {key: int(i) for i, key in await conn.execute(statement, params)}
    return [ids[row["record_key"]] for row in rows]


async def add_blocking_keys(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await add_blocking_key_arrays(
            conn, [r["digest"] for r in rows], [r["record_id"] for r in rows]
        )


async def add_blocking_key_arrays(
    conn: AsyncConnection, digests: Sequence[str], record_ids: Sequence[int]
) -> None:
    """Blind indexes as two parallel lists (digest i belongs to record i)."""
    if not digests:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(
            insert(blocking_keys),
            [{"digest": d, "record_id": r} for d, r in zip(digests, record_ids, strict=True)],
        )
        return
    await conn.execute(
        text(
            "INSERT INTO linkage_blocking_keys (digest, record_id) "
            "SELECT * FROM unnest(CAST(:digests AS varchar[]), CAST(:ids AS bigint[]))"
        ),
        {"digests": list(digests), "ids": list(record_ids)},
    )


async def add_possible_link_rows(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(possible_links), list(rows))


# The vault lock and change feed (`kiban_linkage.replica`) --------------------------------------

VAULT_LOCK = 0x6B6962616E5F6C6B  # the advisory lock's key: "kiban_lk"


async def lock_vault(conn: AsyncConnection) -> None:
    """Serialize the vault's writers until this transaction ends. PostgreSQL: a
    transaction-level advisory lock. SQLite (one process): bumping the state row takes the
    database's write lock, held to the end of the transaction as well."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": VAULT_LOCK})
        return
    await conn.execute(
        update(vault_state).where(vault_state.c.id == 1).values(writes=vault_state.c.writes + 1)
    )


async def change_horizon(conn: AsyncConnection) -> int:
    """The highest change sequence pruned from the feed (0: none)."""
    value = (
        await conn.execute(select(vault_state.c.pruned_through).where(vault_state.c.id == 1))
    ).scalar_one_or_none()
    return int(value or 0)


async def last_change(conn: AsyncConnection) -> int:
    value = (await conn.execute(select(func.max(vault_changes.c.seq)))).scalar_one_or_none()
    return int(value or 0)


async def changes_since(conn: AsyncConnection, seq: int) -> list[tuple[int, str, str, int]]:
    """(seq, writer, kind, record id) of the changes after `seq`, in order."""
    rows = await conn.execute(
        select(
            vault_changes.c.seq,
            vault_changes.c.writer,
            vault_changes.c.kind,
            vault_changes.c.record_id,
        )
        .where(vault_changes.c.seq > seq)
        .order_by(vault_changes.c.seq)
    )
    return [(int(q), w, k, int(r)) for q, w, k, r in rows]


async def add_changes(
    conn: AsyncConnection, writer: str, kinds: Sequence[str], record_ids: Sequence[int]
) -> None:
    """Feed rows, in order (the caller holds the vault lock)."""
    if not kinds:
        return
    if conn.dialect.name != "postgresql":
        await conn.execute(
            insert(vault_changes),
            [
                {"writer": writer, "kind": k, "record_id": r}
                for k, r in zip(kinds, record_ids, strict=True)
            ],
        )
        return
    await conn.execute(
        text(
            "INSERT INTO linkage_vault_changes (writer, kind, record_id) "
            "SELECT :writer, k, r FROM unnest(CAST(:kinds AS varchar[]), "
            "CAST(:ids AS bigint[])) WITH ORDINALITY AS c(k, r, n) ORDER BY n"
        ),
        {"writer": writer, "kinds": list(kinds), "ids": list(record_ids)},
    )


async def prune_changes(conn: AsyncConnection, through: int) -> None:
    """Drop the feed up to `through` and move the horizon there (the caller holds the lock)."""
    await conn.execute(delete(vault_changes).where(vault_changes.c.seq <= through))
    await conn.execute(
        update(vault_state).where(vault_state.c.id == 1).values(pruned_through=through)
    )


async def identities_of(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, str]:
    """Record id → identity token, for those of `ids` still in the vault."""
    out: dict[int, str] = {}
    for chunk in _chunks(sorted(set(ids))):
        query = select(records.c.id, records.c.identity).where(_one_of(conn, records.c.id, chunk))
        out.update((int(i), t) for i, t in await conn.execute(query))
    return out
