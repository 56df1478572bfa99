"""Queries on applications, their transitions and reviews, the register and the statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_review.domain.rule import Ballot, Expertise, Vote
from kiban_review.domain.workflow import Status
from kiban_review.store.tables import (
    applications,
    approval_counters,
    members,
    reviews,
    transitions,
)


async def add(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(insert(applications).values(**row))


async def get(conn: AsyncConnection, application_id: str) -> RowMapping | None:
    result = await conn.execute(
        select(applications).where(applications.c.application_id == application_id)
    )
    return result.mappings().first()


async def page(
    conn: AsyncConnection,
    *,
    applicant: str | None,
    status: Status | None,
    limit: int,
    offset: int,
) -> tuple[Sequence[RowMapping], int]:
    """Newest submissions first; only `applicant`'s when given."""
    conditions = []
    if applicant is not None:
        conditions.append(applications.c.applicant == applicant)
    if status is not None:
        conditions.append(applications.c.status == status.value)
    rows = await conn.execute(
        select(applications)
        .where(*conditions)
        .order_by(applications.c.submitted_at.desc(), applications.c.application_id)
        .limit(limit)
        .offset(offset)
    )
    total = await conn.scalar(select(func.count()).select_from(applications).where(*conditions))
    return rows.mappings().all(), int(total or 0)


async def move(
    conn: AsyncConnection,
    application_id: str,
    *,
    expected: Status,
    expected_round: int,
    values: dict[str, Any],
) -> bool:
    """Update the application only if it is still in `expected` state and round (a concurrent
    transition makes this return False instead of overwriting it)."""
    result = await conn.execute(
        update(applications)
        .where(
            applications.c.application_id == application_id,
            applications.c.status == expected.value,
            applications.c.round == expected_round,
        )
        .values(**values)
    )
    return result.rowcount == 1


async def record_transition(
    conn: AsyncConnection,
    application_id: str,
    *,
    round_: int,
    from_status: Status | None,
    to_status: Status,
    actor: str,
    at: datetime,
) -> None:
    await conn.execute(
        insert(transitions).values(
            application_id=application_id,
            round=round_,
            from_status=from_status.value if from_status else None,
            to_status=to_status.value,
            actor=actor,
            at=at,
        )
    )


async def transitions_of(conn: AsyncConnection, application_id: str) -> Sequence[RowMapping]:
    rows = await conn.execute(
        select(transitions)
        .where(transitions.c.application_id == application_id)
        .order_by(transitions.c.id)
    )
    return rows.mappings().all()


async def add_review(conn: AsyncConnection, row: dict[str, Any]) -> int:
    """Raises `IntegrityError` when the member already reviewed this round."""
    result = await conn.execute(insert(reviews).values(**row).returning(reviews.c.id))
    return int(result.scalar_one())


async def reviews_of(conn: AsyncConnection, application_id: str) -> Sequence[RowMapping]:
    rows = await conn.execute(
        select(reviews, members.c.expertise)
        .join(members, members.c.member_id == reviews.c.member_id)
        .where(reviews.c.application_id == application_id)
        .order_by(reviews.c.round, reviews.c.id)
    )
    return rows.mappings().all()


async def ballots(conn: AsyncConnection, application_id: str, round_: int) -> list[Ballot]:
    rows = await conn.execute(
        select(members.c.expertise, reviews.c.vote, reviews.c.criteria)
        .join(members, members.c.member_id == reviews.c.member_id)
        .where(reviews.c.application_id == application_id, reviews.c.round == round_)
    )
    return [Ballot(Expertise(r.expertise), Vote(r.vote), dict(r.criteria)) for r in rows]


async def next_approval_seq(conn: AsyncConnection, year: int) -> int:
    """Take the next number of `year`. The counter row stays locked until the transaction ends,
    so a concurrent approval waits and takes the following number; a rolled-back approval
    gives its number back."""
    dialect_insert = sqlite_insert if conn.dialect.name == "sqlite" else postgresql_insert
    await conn.execute(
        dialect_insert(approval_counters).values(year=year, last=0).on_conflict_do_nothing()
    )
    taken = await conn.execute(
        update(approval_counters)
        .where(approval_counters.c.year == year)
        .values(last=approval_counters.c.last + 1)
        .returning(approval_counters.c.last)
    )
    return int(taken.scalar_one())


async def approval_page(
    conn: AsyncConnection, limit: int, offset: int
) -> tuple[Sequence[RowMapping], int]:
    """Approved applications, newest approval first (numbers are given in approval order)."""
    approved = applications.c.status == Status.APPROVED.value
    rows = await conn.execute(
        select(
            applications.c.approval_year,
            applications.c.approval_seq,
            applications.c.approved_on,
            applications.c.title,
            applications.c.data_items,
            applications.c.user_category,
        )
        .where(approved)
        .order_by(applications.c.approval_year.desc(), applications.c.approval_seq.desc())
        .limit(limit)
        .offset(offset)
    )
    total = await conn.scalar(select(func.count()).select_from(applications).where(approved))
    return rows.mappings().all(), int(total or 0)


async def decided_between(
    conn: AsyncConnection, start: datetime, end: datetime
) -> Sequence[RowMapping]:
    """Applications whose latest decision is in `[start, end]`, newest decision first."""
    rows = await conn.execute(
        select(
            applications.c.application_id,
            applications.c.decision,
            applications.c.submitted_at,
            applications.c.decided_at,
        )
        .where(applications.c.decided_at >= start, applications.c.decided_at <= end)
        .order_by(applications.c.decided_at.desc(), applications.c.application_id)
    )
    return rows.mappings().all()
