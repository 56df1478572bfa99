"""Every query of the optout service, on the connection of the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_optout.domain.status import Ack
from kiban_optout.store.tables import acks, dispatches, requesters, requests


@dataclass(frozen=True)
class RequestRow:
    optout_id: str
    subject: str  # encrypted
    action: str
    scope: str
    institution_code: str | None
    requester: str
    dispatch_id: str
    received_at: datetime
    updated_at: datetime


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _row(row: Any) -> RequestRow:
    return RequestRow(
        optout_id=row.optout_id,
        subject=row.subject,
        action=row.action,
        scope=row.scope,
        institution_code=row.institution_code,
        requester=row.requester,
        dispatch_id=row.dispatch_id,
        received_at=utc(row.received_at),
        updated_at=utc(row.updated_at),
    )


_COLUMNS = (
    requests.c.optout_id,
    requests.c.subject,
    requests.c.action,
    requests.c.scope,
    requests.c.institution_code,
    requests.c.requester,
    requests.c.dispatch_id,
    requests.c.received_at,
    requests.c.updated_at,
)


def _insert_ignore(conn: AsyncConnection, table: Table) -> Any:
    make = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return make(table)


async def by_subjects(
    conn: AsyncConnection, subject_indexes: Collection[str], *, lock: bool = False
) -> dict[str, list[RequestRow]]:
    """The requests about each subject (every index given is a key), locked for update when
    asked, so concurrent requests about the same person are taken one after the other."""
    out: dict[str, list[RequestRow]] = {index: [] for index in subject_indexes}
    query = (
        select(requests.c.subject_index, *_COLUMNS)
        .where(requests.c.subject_index.in_(sorted(subject_indexes)))
        .order_by(requests.c.optout_id)  # every batch locks in one order: no deadlock
    )
    if lock:
        query = query.with_for_update()
    for r in (await conn.execute(query)).all():
        out[r.subject_index].append(_row(r))
    return out


async def get(conn: AsyncConnection, optout_id: str) -> RequestRow | None:
    row = (await conn.execute(select(*_COLUMNS).where(requests.c.optout_id == optout_id))).first()
    return _row(row) if row is not None else None


async def insert_requests(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """New requests (columns of `requests`; `dispatch_id` is the optout id at first)."""
    if rows:
        await conn.execute(requests.insert(), list(rows))


async def upgrade(
    conn: AsyncConnection,
    optout_id: str,
    *,
    action: str,
    subject: str,
    dispatch_id: str,
    at: datetime,
) -> None:
    await conn.execute(
        update(requests)
        .where(requests.c.optout_id == optout_id)
        .values(action=action, subject=subject, dispatch_id=dispatch_id, updated_at=at)
    )


async def add_dispatches(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """The wire ids sent (`dispatch_id`, `optout_id`, `action`, `dispatched_at`)."""
    if rows:
        await conn.execute(dispatches.insert(), list(rows))


async def add_requesters(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Remember who asked (`optout_id`, `principal`, `requester`, `requested_at`); a repeat of
    the same principal for the same request changes nothing."""
    if rows:
        statement = _insert_ignore(conn, requesters).on_conflict_do_nothing()
        await conn.execute(statement, list(rows))


async def visible(
    conn: AsyncConnection, *, principal: str, subject_index: str | None
) -> list[RequestRow]:
    """Requests `principal` filed, plus (for a patient) those about them, newest first."""
    asked = select(requesters.c.optout_id).where(requesters.c.principal == principal)
    condition: ColumnElement[bool] = requests.c.optout_id.in_(asked)
    if subject_index is not None:
        condition = or_(condition, requests.c.subject_index == subject_index)
    rows = await conn.execute(
        select(*_COLUMNS).where(condition).order_by(requests.c.received_at.desc())
    )
    return [_row(r) for r in rows.all()]


async def filed_by(conn: AsyncConnection, optout_id: str, principal: str) -> bool:
    row = await conn.execute(
        select(requesters.c.optout_id).where(
            requesters.c.optout_id == optout_id, requesters.c.principal == principal
        )
    )
    return row.first() is not None


async def subject_index_of(conn: AsyncConnection, optout_id: str) -> str | None:
    row = await conn.execute(
        select(requests.c.subject_index).where(requests.c.optout_id == optout_id)
    )
    value = row.scalar_one_or_none()
    return str(value) if value is not None else None


async def add_ack(
    conn: AsyncConnection,
    *,
    event_id: str,
    dispatch_id: str,
    service: str,
    applied_at: datetime,
    matched: int,
    purged: dict[str, int],
    at: datetime,
) -> None:
    statement = (
        _insert_ignore(conn, acks)
        .values(
            event_id=event_id,
            dispatch_id=dispatch_id,
            service=service,
            applied_at=applied_at,
            matched=matched,
            purged=purged,
            received_at=at,
        )
        .on_conflict_do_nothing()
    )
    await conn.execute(statement)


async def acks_for(conn: AsyncConnection, dispatch_ids: Sequence[str]) -> dict[str, list[Ack]]:
    out: dict[str, list[Ack]] = {d: [] for d in dispatch_ids}
    if not dispatch_ids:
        return out
    rows = await conn.execute(
        select(
            acks.c.event_id,
            acks.c.dispatch_id,
            acks.c.service,
            acks.c.applied_at,
            acks.c.matched,
            acks.c.purged,
            acks.c.received_at,
        ).where(acks.c.dispatch_id.in_(list(dispatch_ids)))
    )
    for r in rows.all():
        out[r.dispatch_id].append(
            Ack(
                event_id=r.event_id,
                service=r.service,
                applied_at=utc(r.applied_at),
                matched=r.matched,
                purged={str(k): int(v) for k, v in (r.purged or {}).items()},
                received_at=utc(r.received_at),
            )
        )
    return out


@dataclass(frozen=True)
class DispatchRow:
    dispatch_id: str
    action: str
    dispatched_at: datetime


async def dispatches_for(
    conn: AsyncConnection, optout_ids: Sequence[str]
) -> dict[str, list[DispatchRow]]:
    """The `optout-requested` events sent for each request, oldest first."""
    out: dict[str, list[DispatchRow]] = {o: [] for o in optout_ids}
    if not optout_ids:
        return out
    rows = await conn.execute(
        select(
            dispatches.c.optout_id,
            dispatches.c.dispatch_id,
            dispatches.c.action,
            dispatches.c.dispatched_at,
        )
        .where(dispatches.c.optout_id.in_(list(optout_ids)))
        .order_by(dispatches.c.dispatched_at, dispatches.c.dispatch_id)
    )
    for r in rows.all():
        out[r.optout_id].append(DispatchRow(r.dispatch_id, r.action, utc(r.dispatched_at)))
    return out
