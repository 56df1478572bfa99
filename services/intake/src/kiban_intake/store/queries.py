"""Every query of the intake service, on an `AsyncConnection` of the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    String,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_intake.domain.rules import Notice
from kiban_intake.store.tables import (
    BLOCKS,
    IDENTITY_KEYS,
    INSTITUTIONS,
    NOTICES,
    PATIENTS,
    RECORDS,
    SUBMISSIONS,
    metadata,
)

institutions = metadata.tables[INSTITUTIONS]
notices = metadata.tables[NOTICES]
patients = metadata.tables[PATIENTS]
identity_keys = metadata.tables[IDENTITY_KEYS]
blocks = metadata.tables[BLOCKS]
submissions = metadata.tables[SUBMISSIONS]
records = metadata.tables[RECORDS]

_CHUNK = 500  # bound IN (...) lists


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


def _upsert(conn: AsyncConnection, table: Table) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


# -- institutions ------------------------------------------------------------------------------


async def get_institution(conn: AsyncConnection, code: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(institutions).where(institutions.c.code == code))).first()
    return dict(row._mapping) if row else None


async def list_institutions(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(select(institutions).order_by(institutions.c.code))
    return [dict(r._mapping) for r in rows]


async def add_institution(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(insert(institutions).values(**row))


async def set_institution_status(
    conn: AsyncConnection, code: str, status: str, at: datetime | None
) -> None:
    await conn.execute(
        update(institutions)
        .where(institutions.c.code == code)
        .values(status=status, suspended_at=at)
    )


# -- notices -----------------------------------------------------------------------------------


async def upsert_notices(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _upsert(conn, notices)
    stmt = stmt.on_conflict_do_update(
        index_elements=["patient_key", "notified_on"],
        set_={
            "method": stmt.excluded.method,
            "guardian_notified": stmt.excluded.guardian_notified,
            "recorded_at": stmt.excluded.recorded_at,
        },
    )
    await conn.execute(stmt, rows)


async def notices_for(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, list[Notice]]:
    found: dict[str, list[Notice]] = defaultdict(list)
    for chunk in _chunks(keys):
        rows = await conn.execute(
            select(notices.c.patient_key, notices.c.notified_on, notices.c.guardian_notified).where(
                notices.c.patient_key.in_(chunk)
            )
        )
        for key, notified_on, guardian in rows:
            found[key].append(Notice(notified_on, bool(guardian)))
    return found


# -- patients, identity keys, blocks -----------------------------------------------------------


async def blocked_digests(
    conn: AsyncConnection, institution_code: str, digests: Sequence[str]
) -> set[str]:
    """Digests (patient keys or identity keys) an opt-out blocks at this institution."""
    found: set[str] = set()
    for chunk in _chunks(list(dict.fromkeys(digests))):
        rows = await conn.execute(
            select(blocks.c.digest).where(
                blocks.c.digest.in_(chunk),
                or_(
                    blocks.c.institution_code.is_(None),
                    blocks.c.institution_code == institution_code,
                ),
            )
        )
        found.update(r[0] for r in rows)
    return found


async def opted_out_keys(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        rows = await conn.execute(
            select(patients.c.patient_key).where(
                patients.c.patient_key.in_(chunk), patients.c.opted_out.is_(True)
            )
        )
        found.update(r[0] for r in rows)
    return found


@dataclass(slots=True)
class AdmissionFacts:
    """What deciding a batch of patients needs, read in one round trip."""

    institution_status: str | None = None  # None: not registered (or not asked)
    notices: dict[str, list[Notice]] = field(default_factory=lambda: defaultdict(list))
    blocked: set[str] = field(default_factory=set)  # blocked digests / patient keys
    opted_out: set[str] = field(default_factory=set)
    identity_keys: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


def _facts_parts(
    keys: list[Any], digests: list[Any], institution_code: Any, institution: bool
) -> list[Any]:
    """The selects of `admission_facts`: `keys` and `digests` are lists of IN-lists (one per
    chunk) or, on PostgreSQL, one `= ANY(array)` comparator each."""
    no_str, no_date, no_bool = cast(null(), String), cast(null(), Date), cast(null(), Boolean)

    def tag(kind: str) -> Any:
        return literal_column(f"'{kind}'", String).label("kind")

    parts: list[Any] = []
    for match in keys:
        parts.append(
            select(
                tag("n"),
                notices.c.patient_key.label("a"),
                no_str.label("b"),
                notices.c.notified_on.label("day"),
                notices.c.guardian_notified.label("flag"),
            ).where(match(notices.c.patient_key))
        )
        parts.append(
            select(tag("o"), patients.c.patient_key, no_str, no_date, no_bool).where(
                match(patients.c.patient_key), patients.c.opted_out.is_(True)
            )
        )
        parts.append(
            select(
                tag("k"), identity_keys.c.patient_key, identity_keys.c.digest, no_date, no_bool
            ).where(match(identity_keys.c.patient_key))
        )
    for match in digests:
        parts.append(
            select(tag("b"), blocks.c.digest, no_str, no_date, no_bool).where(
                match(blocks.c.digest),
                or_(
                    blocks.c.institution_code.is_(None),
                    blocks.c.institution_code == institution_code,
                ),
            )
        )
    if institution:
        parts.append(
            select(tag("i"), institutions.c.status, no_str, no_date, no_bool).where(
                institutions.c.code == institution_code
            )
        )
    return parts


def _union(parts: list[Any]) -> Any:
    # Typed as Any: mypy 2.4 crashes expanding union_all's generic over a list of selects
    # (seen on a cold cache only).
    combine: Any = union_all
    return combine(*parts) if len(parts) > 1 else parts[0]


@cache
def _facts_on_postgresql(institution: bool) -> Any:
    """Built once: the same SQL text for every batch size (arrays, not IN-lists), so the
    statement is compiled once, its cache key is memoized and asyncpg keeps it prepared."""
    keys = bindparam("keys", type_=postgresql.ARRAY(String))
    digests = bindparam("digests", type_=postgresql.ARRAY(String))
    return _union(
        _facts_parts(
            [lambda c: c == any_(keys)],
            [lambda c: c == any_(digests)],
            bindparam("institution_code", type_=String),
            institution,
        )
    )


async def admission_facts(
    conn: AsyncConnection,
    institution_code: str,
    keys: Sequence[str],
    digests: Sequence[str],
    *,
    institution: bool = False,
) -> AdmissionFacts:
    """Notices, opt-out blocks, opted-out flags and stored identity keys of these patients
    (and, with `institution`, the institution's status) as one `UNION ALL` statement."""
    unique_keys = list(dict.fromkeys(keys))
    lookups = list(dict.fromkeys([*unique_keys, *digests]))
    facts = AdmissionFacts()
    if conn.dialect.name == "postgresql":
        if not lookups and not institution:
            return facts
        rows = await conn.execute(
            _facts_on_postgresql(institution),
            {"keys": unique_keys, "digests": lookups, "institution_code": institution_code},
        )
    else:
        parts = _facts_parts(
            [lambda c, chunk=chunk: c.in_(chunk) for chunk in _chunks(unique_keys)],
            [lambda c, chunk=chunk: c.in_(chunk) for chunk in _chunks(lookups)],
            institution_code,
            institution,
        )
        if not parts:
            return facts
        rows = await conn.execute(_union(parts))
    for kind, a, b, day, flag in rows:
        if kind == "n":
            facts.notices[a].append(Notice(day, bool(flag)))
        elif kind == "o":
            facts.opted_out.add(a)
        elif kind == "k":
            facts.identity_keys[a].add(b)
        elif kind == "b":
            facts.blocked.add(a)
        else:
            facts.institution_status = a
    return facts


async def upsert_patients(
    conn: AsyncConnection,
    rows: list[dict[str, Any]],
    keys: list[dict[str, Any]],
    stale: Sequence[str] | None = None,
) -> None:
    """Insert or refresh patients (identity, watch flag) and store their identity keys.
    `stale`: patients whose stored identity keys are removed first (all of `rows` when None);
    `keys` are inserted, a key already stored is kept."""
    if not rows:
        return
    await conn.execute(_patient_upsert(conn.dialect.name), rows)
    for chunk in _chunks([r["patient_key"] for r in rows] if stale is None else list(stale)):
        await conn.execute(delete(identity_keys).where(identity_keys.c.patient_key.in_(chunk)))
    if keys:
        await conn.execute(_identity_key_insert(conn.dialect.name), keys)


@cache
def _patient_upsert(dialect_name: str) -> Any:
    """Built once per dialect (its cache key is then memoized), executed with many rows."""
    stmt = (postgresql if dialect_name == "postgresql" else sqlite).insert(patients)
    return stmt.on_conflict_do_update(
        index_elements=["patient_key"],
        set_={
            "identity": stmt.excluded.identity,
            "renewal_watch": stmt.excluded.renewal_watch,
            "updated_at": stmt.excluded.updated_at,
        },
    )


@cache
def _identity_key_insert(dialect_name: str) -> Any:
    stmt = (postgresql if dialect_name == "postgresql" else sqlite).insert(identity_keys)
    return stmt.on_conflict_do_nothing(index_elements=["patient_key", "digest"])


async def get_patients(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(keys):
        rows = await conn.execute(select(patients).where(patients.c.patient_key.in_(chunk)))
        found.update({r.patient_key: dict(r._mapping) for r in rows})
    return found


async def watched_patients(conn: AsyncConnection, institution_code: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(patients).where(
            patients.c.institution_code == institution_code,
            patients.c.renewal_watch.is_(True),
            patients.c.opted_out.is_(False),
        )
    )
    return [dict(r._mapping) for r in rows]


async def set_watch(conn: AsyncConnection, keys: Sequence[str], watch: bool) -> None:
    for chunk in _chunks(keys):
        await conn.execute(
            update(patients).where(patients.c.patient_key.in_(chunk)).values(renewal_watch=watch)
        )


async def patients_by_digest(
    conn: AsyncConnection, digests: Sequence[str], institution_code: str | None
) -> set[str]:
    if not digests:
        return set()
    stmt = select(identity_keys.c.patient_key).where(identity_keys.c.digest.in_(list(digests)))
    if institution_code is not None:
        stmt = stmt.where(identity_keys.c.institution_code == institution_code)
    return {r[0] for r in await conn.execute(stmt)}


async def existing_keys(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(keys):
        rows = await conn.execute(
            select(patients.c.patient_key).where(patients.c.patient_key.in_(chunk))
        )
        found.update(r[0] for r in rows)
    return found


async def add_blocks(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    stmt = _upsert(conn, blocks).on_conflict_do_nothing(index_elements=["optout_id", "digest"])
    await conn.execute(stmt, rows)


async def mark_opted_out(
    conn: AsyncConnection,
    keys: Sequence[str],
    optout_id: str,
    at: datetime,
    *,
    delete_identity: bool,
) -> None:
    values: dict[str, Any] = {"opted_out": True, "optout_id": optout_id, "updated_at": at}
    if delete_identity:
        values.update(identity=None, renewal_watch=False)
    for chunk in _chunks(keys):
        await conn.execute(update(patients).where(patients.c.patient_key.in_(chunk)).values(values))
        if delete_identity:
            await conn.execute(delete(identity_keys).where(identity_keys.c.patient_key.in_(chunk)))


# -- records -----------------------------------------------------------------------------------


async def insert_records(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(_INSERT_RECORDS, rows)


async def drop_held(conn: AsyncConnection, keys: Sequence[str]) -> int:
    """Held records of these patients will never be provided: drop them and their data."""
    count = 0
    for chunk in _chunks(keys):
        result = await conn.execute(
            update(records)
            .where(records.c.patient_key.in_(chunk), records.c.status == "held")
            .values(status="dropped", reason="opted_out", identity=None, resources=None)
        )
        count += result.rowcount or 0
    return count


async def delete_raw(conn: AsyncConnection, keys: Sequence[str]) -> int:
    """Delete the stored raw data (identity and resources) of these patients' records."""
    count = 0
    for chunk in _chunks(keys):
        result = await conn.execute(
            update(records)
            .where(records.c.patient_key.in_(chunk), records.c.resources.is_not(None))
            .values(identity=None, resources=None)
        )
        count += result.rowcount or 0
    return count


async def held_records(
    conn: AsyncConnection,
    *,
    due_on: date | None = None,
    keys: Sequence[str] | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Held records due by `due_on` (locked, skipping rows another worker holds), or all
    held records of `keys`."""
    stmt = select(records).where(records.c.status == "held")
    if due_on is not None:
        stmt = (
            stmt.where(records.c.eligible_on.is_not(None), records.c.eligible_on <= due_on)
            .order_by(records.c.eligible_on, records.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    if keys is not None:
        stmt = stmt.where(records.c.patient_key.in_(list(keys)))
    return [dict(r._mapping) for r in await conn.execute(stmt)]


async def update_record(conn: AsyncConnection, record_id: str, **values: Any) -> None:
    await conn.execute(update(records).where(records.c.id == record_id).values(**values))


async def held_counts(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = await conn.execute(
        select(records.c.patient_key, func.count())
        .where(records.c.patient_key.in_(list(keys)), records.c.status == "held")
        .group_by(records.c.patient_key)
    )
    return {k: int(n) for k, n in rows}


# -- submissions -------------------------------------------------------------------------------


_INSERT_SUBMISSION = insert(submissions)
_INSERT_RECORDS = insert(records)


async def insert_submissions(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    # The rows as parameters of one prepared INSERT (not `.values(**row)`, which builds a new
    # statement, and a new cache key, per call).
    if rows:
        await conn.execute(_INSERT_SUBMISSION, rows)


async def get_submission(conn: AsyncConnection, submission_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(submissions).where(submissions.c.id == submission_id))).first()
    return dict(row._mapping) if row else None


async def submission_by_key(
    conn: AsyncConnection, institution_code: str, key: str
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(submissions).where(
                and_(
                    submissions.c.institution_code == institution_code,
                    submissions.c.idempotency_key == key,
                )
            )
        )
    ).first()
    return dict(row._mapping) if row else None
