"""Queries on the committee and the certified users."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import RowMapping, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_review.domain.certification import Certification
from kiban_review.store.tables import certified_users, members


async def add_member(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Raises `IntegrityError` when the member id is taken."""
    await conn.execute(insert(members).values(**row))


async def member(conn: AsyncConnection, member_id: str) -> RowMapping | None:
    result = await conn.execute(select(members).where(members.c.member_id == member_id))
    return result.mappings().first()


async def member_page(
    conn: AsyncConnection, limit: int, offset: int
) -> tuple[Sequence[RowMapping], int]:
    rows = await conn.execute(
        select(members).order_by(members.c.member_id).limit(limit).offset(offset)
    )
    total = await conn.scalar(select(func.count()).select_from(members))
    return rows.mappings().all(), int(total or 0)


async def add_certification(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(insert(certified_users).values(**row))


async def certifications(conn: AsyncConnection, organization_key: str) -> list[Certification]:
    rows = await conn.execute(
        select(certified_users.c.certified_on, certified_users.c.expires_on).where(
            certified_users.c.organization_key == organization_key
        )
    )
    return [Certification(r.certified_on, r.expires_on) for r in rows]


async def certification_page(
    conn: AsyncConnection, limit: int, offset: int
) -> tuple[Sequence[RowMapping], int]:
    rows = await conn.execute(
        select(certified_users)
        .order_by(certified_users.c.created_at.desc(), certified_users.c.certification_id)
        .limit(limit)
        .offset(offset)
    )
    total = await conn.scalar(select(func.count()).select_from(certified_users))
    return rows.mappings().all(), int(total or 0)
