"""Queries of the research store: records in, purges, snapshots for builds, counts.

Every function takes the session of the caller's transaction; none commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from kiban_anonymizer.domain.dataset import Person, Request, Snapshot, cohort_of, tables_for
from kiban_anonymizer.domain.research import COLUMNS, ResearchRow, flatten, normalize_postal
from kiban_anonymizer.store.tables import (
    EVENT_TABLES,
    persons,
    purge_state,
    purged_persons,
)
from kiban_common.events import RecordLinkedV1

_CHUNK = 500  # keys per IN (...) clause


async def _connection(session: AsyncSession) -> AsyncConnection:
    return await session.connection()


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


async def purged_among(session: AsyncSession, pseudonyms: Sequence[str]) -> set[str]:
    connection = await _connection(session)
    found: set[str] = set()
    for chunk in _chunks(list(pseudonyms)):
        rows = await connection.execute(
            select(purged_persons.c.pseudonym).where(purged_persons.c.pseudonym.in_(chunk))
        )
        found.update(r[0] for r in rows)
    return found


async def store_record(session: AsyncSession, data: RecordLinkedV1, now: datetime) -> int:
    """Apply one linked record: follow merges, upsert demographics, replace rows by source.
    Returns the number of rows stored (-1: the person was purged, so the record is dropped)."""
    connection = await _connection(session)
    if await purged_among(session, [data.person]):
        return -1
    absorbed = [p for p in data.merged_from if p != data.person]
    previous = await _person(connection, data.person)
    for old in absorbed:
        for table in EVENT_TABLES.values():
            await connection.execute(
                update(table).where(table.c.person == old).values(person=data.person)
            )
        merged = await _person(connection, old)
        if merged is not None:
            previous = _combine(merged, previous or {})
            await connection.execute(delete(persons).where(persons.c.pseudonym == old))
    incoming = _demographics(data)
    values = _combine(previous, incoming) if previous else incoming
    values["updated_at"] = now
    if await _person(connection, data.person) is None:
        await connection.execute(insert(persons).values(pseudonym=data.person, **values))
    else:
        await connection.execute(
            update(persons).where(persons.c.pseudonym == data.person).values(**values)
        )
    rows = [r for r in (flatten(data.institution_code, res) for res in data.resources) if r]
    await _replace_rows(connection, data.person, data.institution_code, rows)
    return len(rows)


async def store_records(
    session: AsyncSession, records: Sequence[RecordLinkedV1], now: datetime
) -> list[int]:
    """Apply a consumer batch of linked records in arrival order, with the same outcome as
    `store_record` on each in turn; returns what it would have returned for each.

    Records without merges are applied together: one read of the purged and of the known
    persons, one write per table. A batch used to cost ten round trips per record, which on
    two cores left the research store minutes behind under intake load and made every purge
    wait for the long transaction it queued behind. A record that merges persons is applied
    on its own, between the runs before and after it."""
    out: list[int] = []
    run: list[RecordLinkedV1] = []
    for record in records:
        if any(p != record.person for p in record.merged_from):
            out += await _store_run(session, run, now)
            run = []
            out.append(await store_record(session, record, now))
        else:
            run.append(record)
    out += await _store_run(session, run, now)
    return out


async def _store_run(
    session: AsyncSession, records: Sequence[RecordLinkedV1], now: datetime
) -> list[int]:
    if not records:
        return []
    connection = await _connection(session)
    people = list(dict.fromkeys(r.person for r in records))
    purged = await purged_among(session, people)
    known = await _persons(connection, [p for p in people if p not in purged])
    values: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in EVENT_TABLES}
    out: list[int] = []
    for record in records:
        if record.person in purged:
            out.append(-1)
            continue
        previous = values.get(record.person, known.get(record.person))
        incoming = _demographics(record)
        values[record.person] = _combine(previous, incoming) if previous else incoming
        kept = [r for r in (flatten(record.institution_code, res) for res in record.resources) if r]
        for row in kept:  # by source: the last delivery of a source wins, as one by one
            rows[row.table][row.source] = {
                "person": record.person,
                "source": row.source,
                "institution_code": record.institution_code,
                **row.values,
            }
        out.append(len(kept))
    new = [{"pseudonym": p, **v, "updated_at": now} for p, v in values.items() if p not in known]
    old = [{"key": p, **v, "updated_at": now} for p, v in values.items() if p in known]
    if new:
        await connection.execute(insert(persons), new)
    if old:
        await connection.execute(
            update(persons).where(persons.c.pseudonym == bindparam("key")),
            old,
        )
    for name, by_source in rows.items():
        if not by_source:
            continue
        table = EVENT_TABLES[name]
        for chunk in _chunks(list(by_source)):
            await connection.execute(delete(table).where(table.c.source.in_(chunk)))
        await connection.execute(insert(table), list(by_source.values()))
    return out


def _demographics(record: RecordLinkedV1) -> dict[str, Any]:
    demo = record.demographics
    return {
        "birth_date": demo.birth_date,
        "sex": demo.sex,
        "postal_code": normalize_postal(demo.postal_code),
        "deceased_on": demo.deceased_on,
    }


async def _persons(
    connection: AsyncConnection, pseudonyms: Sequence[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(pseudonyms)):
        rows = await connection.execute(
            select(
                persons.c.pseudonym,
                persons.c.birth_date,
                persons.c.sex,
                persons.c.postal_code,
                persons.c.deceased_on,
            ).where(persons.c.pseudonym.in_(chunk))
        )
        for row in rows:
            person = dict(row._mapping)
            found[person.pop("pseudonym")] = person
    return found


def _combine(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Newer values win; a missing newer value keeps the older one ("unknown" sex too)."""
    out = dict(old or {})
    out.pop("updated_at", None)
    for key, value in new.items():
        if key == "updated_at":
            continue
        if value is not None and not (key == "sex" and value == "unknown" and out.get(key)):
            out[key] = value
        else:
            out.setdefault(key, value)
    return out


async def _person(connection: AsyncConnection, pseudonym: str) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            select(
                persons.c.birth_date,
                persons.c.sex,
                persons.c.postal_code,
                persons.c.deceased_on,
            ).where(persons.c.pseudonym == pseudonym)
        )
    ).first()
    return dict(row._mapping) if row is not None else None


async def _replace_rows(
    connection: AsyncConnection, person: str, institution: str, rows: Sequence[ResearchRow]
) -> None:
    by_table: dict[str, list[ResearchRow]] = {}
    for row in rows:
        by_table.setdefault(row.table, []).append(row)
    for name, table_rows in by_table.items():
        table = EVENT_TABLES[name]
        unique = {r.source: r for r in table_rows}  # the last of duplicates within a record
        sources = list(unique)
        for chunk in _chunks(sources):
            await connection.execute(delete(table).where(table.c.source.in_(chunk)))
        await connection.execute(
            insert(table),
            [
                {"person": person, "source": r.source, "institution_code": institution, **r.values}
                for r in unique.values()
            ],
        )


async def bump_purge_seq(session: AsyncSession) -> int:
    """Advance the purge counter (locking it until commit); returns the new value."""
    return await _purge_seq(session, 1)


async def lock_purge_seq(session: AsyncSession) -> int:
    """Take the purge counter's lock for the rest of the transaction; returns its value."""
    return await _purge_seq(session, 0)


async def _purge_seq(session: AsyncSession, by: int) -> int:
    connection = await _connection(session)
    result = await connection.execute(
        update(purge_state)
        .where(purge_state.c.id == 1)
        .values(seq=purge_state.c.seq + by)
        .returning(purge_state.c.seq)
    )
    row = result.first()
    if row is None:  # a database created without the migration's seed row
        await connection.execute(insert(purge_state).values(id=1, seq=by))
        return by
    return int(row[0])


async def purge_person(
    session: AsyncSession, pseudonym: str, optout_id: str, now: datetime
) -> dict[str, int]:
    """Delete every row of the person and remember the pseudonym; returns counts by table."""
    seq = await bump_purge_seq(session)
    connection = await _connection(session)
    counts: dict[str, int] = {}
    for name, table in EVENT_TABLES.items():
        result = await connection.execute(delete(table).where(table.c.person == pseudonym))
        counts[name] = result.rowcount or 0
    result = await connection.execute(delete(persons).where(persons.c.pseudonym == pseudonym))
    counts["persons"] = result.rowcount or 0
    if not await purged_among(session, [pseudonym]):
        await connection.execute(
            insert(purged_persons).values(
                pseudonym=pseudonym, optout_id=optout_id, seq=seq, purged_at=now
            )
        )
    return counts


async def purged_since(session: AsyncSession, seq: int) -> set[str]:
    connection = await _connection(session)
    rows = await connection.execute(
        select(purged_persons.c.pseudonym).where(purged_persons.c.seq > seq)
    )
    return {r[0] for r in rows}


async def load_snapshot(session: AsyncSession, request: Request) -> tuple[Snapshot, int]:
    """The cohort of `request` with the rows of its tables, and the purge counter read BEFORE
    the rows (so any purge not reflected in the rows has a higher sequence number)."""
    seq = await read_purge_seq(session)
    connection = await _connection(session)
    all_persons = [r[0] for r in await connection.execute(select(persons.c.pseudonym))]
    purged = await purged_among(session, all_persons)
    candidates = [p for p in all_persons if p not in purged]
    conditions_table = EVENT_TABLES["conditions"]
    condition_rows = [
        dict(r._mapping)
        for r in await connection.execute(
            select(
                conditions_table.c.person,
                conditions_table.c.code,
                conditions_table.c.onset_date,
                conditions_table.c.recorded_date,
            )
        )
    ]
    cohort = cohort_of(condition_rows, candidates, request)
    chosen: dict[str, Person] = {}
    for chunk in _chunks(cohort):
        for r in await connection.execute(select(persons).where(persons.c.pseudonym.in_(chunk))):
            chosen[r.pseudonym] = Person(
                r.pseudonym, r.birth_date, r.sex, r.postal_code, r.deceased_on
            )
    needed = set(tables_for(request.resources)[1:])
    if request.kind == "anonymized":
        needed.add("conditions")  # the first diagnosis is a quasi-identifier
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(needed):
        table = EVENT_TABLES[name]
        columns = [table.c.person, *(table.c[c] for c in COLUMNS[name])]
        rows[name] = []
        for chunk in _chunks(cohort):
            result = await connection.execute(select(*columns).where(table.c.person.in_(chunk)))
            rows[name].extend(dict(r._mapping) for r in result)
    return Snapshot(chosen, rows), seq


async def read_purge_seq(session: AsyncSession) -> int:
    connection = await _connection(session)
    row = (await connection.execute(select(purge_state.c.seq).where(purge_state.c.id == 1))).first()
    return int(row[0]) if row is not None else 0


async def counts(session: AsyncSession) -> dict[str, int]:
    connection = await _connection(session)
    out: dict[str, int] = {}
    for name, table in {"persons": persons, **EVENT_TABLES}.items():
        out[name] = int(
            (await connection.execute(select(func.count()).select_from(table))).scalar_one()
        )
    out["purged_persons"] = int(
        (await connection.execute(select(func.count()).select_from(purged_persons))).scalar_one()
    )
    return out
