"""Dataset builds as rows: queued by the consumer, claimed and finished by the build worker.

A build is claimed with a lease (`worker`, `heartbeat_at`). A build whose worker stopped
heart-beating (the process died or restarted) is claimed again after the lease: it is retried
from the start, at most `max_attempts` times, then failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlmodel.ext.asyncio.session import AsyncSession

from kiban_anonymizer.store.tables import builds
from kiban_common.events import DatasetRequestedV1

QUEUED, RUNNING, READY, FAILED = "queued", "running", "ready", "failed"


@dataclass(frozen=True)
class Claimed:
    build_id: str
    release_id: str
    application_id: str
    spec: dict[str, Any]
    requested_at: datetime
    attempts: int
    purge_reruns: int
    excluded_after_purge: int


async def queue_build(
    session: AsyncSession, build_id: str, data: DatasetRequestedV1, now: datetime
) -> bool:
    """Queue a build for the release unless one exists (a repeated request is the same build)."""
    connection = await session.connection()
    existing = (
        await connection.execute(
            select(builds.c.build_id).where(builds.c.release_id == data.release_id)
        )
    ).first()
    if existing is not None:
        return False
    await connection.execute(
        insert(builds).values(
            build_id=build_id,
            release_id=data.release_id,
            application_id=data.application_id,
            kind=data.dataset.kind,
            spec=data.dataset.model_dump(mode="json"),
            requested_at=data.requested_at,
            status=QUEUED,
            attempts=0,
            purge_reruns=0,
            excluded_after_purge=0,
            created_at=now,
        )
    )
    return True


async def claim_next(
    session: AsyncSession, worker: str, now: datetime, lease: timedelta
) -> Claimed | None:
    """Take the oldest queued build, or a running one whose lease expired."""
    connection = await session.connection()
    stale = now - lease
    claimable = or_(
        builds.c.status == QUEUED,
        and_(builds.c.status == RUNNING, builds.c.heartbeat_at < stale),
    )
    candidates = await connection.execute(
        select(builds.c.build_id).where(claimable).order_by(builds.c.created_at).limit(5)
    )
    for (build_id,) in candidates.all():
        result = await connection.execute(
            update(builds)
            .where(builds.c.build_id == build_id, claimable)
            .values(
                status=RUNNING,
                worker=worker,
                attempts=builds.c.attempts + 1,
                heartbeat_at=now,
                started_at=now,
            )
        )
        if result.rowcount == 1:
            row = (
                await connection.execute(select(builds).where(builds.c.build_id == build_id))
            ).one()
            return Claimed(
                build_id=row.build_id,
                release_id=row.release_id,
                application_id=row.application_id,
                spec=dict(row.spec),
                requested_at=row.requested_at,
                attempts=row.attempts,
                purge_reruns=row.purge_reruns,
                excluded_after_purge=row.excluded_after_purge,
            )
    return None


async def heartbeat(session: AsyncSession, build_id: str, worker: str, now: datetime) -> bool:
    """Extend the lease; False if another worker took the build over."""
    connection = await session.connection()
    result = await connection.execute(
        update(builds)
        .where(builds.c.build_id == build_id, builds.c.worker == worker, builds.c.status == RUNNING)
        .values(heartbeat_at=now)
    )
    return result.rowcount == 1


async def record_rerun(session: AsyncSession, build_id: str, excluded: int) -> None:
    """A purge arrived during the build and hit persons it held: it is built again without them."""
    connection = await session.connection()
    await connection.execute(
        update(builds)
        .where(builds.c.build_id == build_id)
        .values(
            purge_reruns=builds.c.purge_reruns + 1,
            excluded_after_purge=builds.c.excluded_after_purge + excluded,
        )
    )


async def finish(
    session: AsyncSession,
    build_id: str,
    *,
    status: str,
    now: datetime,
    reason: str | None = None,
    report: dict[str, Any] | None = None,
    files: list[dict[str, Any]] | None = None,
) -> None:
    connection = await session.connection()
    await connection.execute(
        update(builds)
        .where(builds.c.build_id == build_id)
        .values(
            status=status,
            reason=reason,
            report=report,
            files=files or [],
            finished_at=now,
            worker=None,
        )
    )


async def get(session: AsyncSession, build_id: str) -> dict[str, Any] | None:
    connection = await session.connection()
    row = (await connection.execute(select(builds).where(builds.c.build_id == build_id))).first()
    return dict(row._mapping) if row is not None else None


async def find(session: AsyncSession, release_id: str | None) -> list[dict[str, Any]]:
    connection = await session.connection()
    query = select(builds).order_by(builds.c.created_at)
    if release_id is not None:
        query = query.where(builds.c.release_id == release_id)
    return [dict(r._mapping) for r in await connection.execute(query.limit(200))]


async def status_counts(session: AsyncSession) -> dict[str, int]:
    connection = await session.connection()
    rows = await connection.execute(select(builds.c.status))
    out = {QUEUED: 0, RUNNING: 0, READY: 0, FAILED: 0}
    for (status,) in rows:
        out[status] = out.get(status, 0) + 1
    return out
