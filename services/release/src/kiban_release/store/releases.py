"""Every query of the release service, on the connection of the caller's transaction.

SQLite hands back naive datetimes for `DateTime(timezone=True)`; everything stored is UTC, so
rows are read back as aware UTC datetimes (`_utc`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import RowMapping, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_release.domain.release import Release, ReleaseFile, ReleaseStatus
from kiban_release.store.tables import release_downloads, release_files, release_persons, releases

_CHUNK = 500  # bound parameters per IN (...) or per insert batch


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _release(row: RowMapping, files: Sequence[ReleaseFile] = ()) -> Release:
    created = _utc(row["created_at"])
    assert created is not None
    return Release(
        id=row["id"],
        application_id=row["application_id"],
        applicant=row["applicant"],
        organization=row["organization"],
        kind=row["kind"],
        status=ReleaseStatus(row["status"]),
        dataset=row["dataset"],
        created_at=created,
        reason=row["reason"],
        build_id=row["build_id"],
        privacy=row["privacy"],
        manifest=row["manifest"],
        fee=row["fee"],
        ready_at=_utc(row["ready_at"]),
        expires_at=_utc(row["expires_at"]),
        ended_at=_utc(row["ended_at"]),
        files=tuple(files),
    )


def _file(row: RowMapping) -> ReleaseFile:
    return ReleaseFile(
        name=row["name"],
        rows=row["rows"],
        sha256=row["sha256"],
        bytes=row["bytes"],
        path=row["path"],
    )


async def insert_release(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(insert(releases).values(**values))


async def release_for_decision(conn: AsyncConnection, decision_event_id: str) -> str | None:
    result = await conn.execute(
        select(releases.c.id).where(releases.c.decision_event_id == decision_event_id)
    )
    return result.scalar_one_or_none()


async def get_release(
    conn: AsyncConnection, release_id: str, *, for_update: bool = False, with_files: bool = True
) -> Release | None:
    """The release, locked against concurrent changes with `for_update` (PostgreSQL; SQLite
    serializes writers anyway)."""
    stmt = select(releases).where(releases.c.id == release_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await conn.execute(stmt)).mappings().one_or_none()
    if row is None:
        return None
    files = await files_of(conn, release_id) if with_files else []
    return _release(row, files)


async def files_of(conn: AsyncConnection, release_id: str) -> list[ReleaseFile]:
    result = await conn.execute(
        select(release_files)
        .where(release_files.c.release_id == release_id)
        .order_by(release_files.c.name)
    )
    return [_file(r) for r in result.mappings()]


async def list_releases(
    conn: AsyncConnection,
    *,
    applicant: str | None,
    application_id: str | None,
    limit: int,
    offset: int,
) -> list[Release]:
    """Newest first. `applicant=None` lists every recipient's (operators only)."""
    stmt = select(releases)
    if applicant is not None:
        stmt = stmt.where(releases.c.applicant == applicant)
    if application_id is not None:
        stmt = stmt.where(releases.c.application_id == application_id)
    stmt = stmt.order_by(releases.c.created_at.desc(), releases.c.id).limit(limit).offset(offset)
    rows = (await conn.execute(stmt)).mappings().all()
    return [_release(r, await files_of(conn, r["id"])) for r in rows]


async def update_release(conn: AsyncConnection, release_id: str, **values: Any) -> None:
    await conn.execute(update(releases).where(releases.c.id == release_id).values(**values))


async def insert_files(
    conn: AsyncConnection, release_id: str, files: Iterable[ReleaseFile]
) -> None:
    rows = [
        {
            "release_id": release_id,
            "name": f.name,
            "rows": f.rows,
            "sha256": f.sha256,
            "bytes": f.bytes,
            "path": f.path,
        }
        for f in files
    ]
    if rows:
        await conn.execute(insert(release_files), rows)


async def insert_persons(conn: AsyncConnection, release_id: str, person_ids: Iterable[str]) -> int:
    ids = sorted(set(person_ids))
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        await conn.execute(
            insert(release_persons), [{"person_id": p, "release_id": release_id} for p in chunk]
        )
    return len(ids)


async def releases_due_for_expiry(
    conn: AsyncConnection, now: datetime, *, limit: int = 500
) -> list[Release]:
    result = await conn.execute(
        select(releases)
        .where(releases.c.status == ReleaseStatus.READY.value, releases.c.expires_at <= now)
        .order_by(releases.c.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = result.mappings().all()
    return [_release(r, await files_of(conn, r["id"])) for r in rows]


async def count_downloads(
    conn: AsyncConnection, release_id: str, file_name: str, principal: str
) -> int:
    result = await conn.execute(
        select(func.count())
        .select_from(release_downloads)
        .where(
            release_downloads.c.release_id == release_id,
            release_downloads.c.file_name == file_name,
            release_downloads.c.principal == principal,
        )
    )
    return int(result.scalar_one())


async def downloads_by_file(
    conn: AsyncConnection, release_id: str, principal: str
) -> dict[str, int]:
    result = await conn.execute(
        select(release_downloads.c.file_name, func.count())
        .where(
            release_downloads.c.release_id == release_id,
            release_downloads.c.principal == principal,
        )
        .group_by(release_downloads.c.file_name)
    )
    return {name: int(n) for name, n in result.all()}


async def start_download(
    conn: AsyncConnection,
    *,
    release_id: str,
    file_name: str,
    principal: str,
    source: str | None,
    at: datetime,
) -> int:
    result = await conn.execute(
        insert(release_downloads)
        .values(
            release_id=release_id,
            file_name=file_name,
            principal=principal,
            source=source,
            started_at=at,
            bytes=0,
            completed=False,
        )
        .returning(release_downloads.c.id)
    )
    return int(result.scalar_one())


async def finish_download(
    conn: AsyncConnection,
    download_id: int,
    *,
    at: datetime,
    sent: int,
    completed: bool,
    sha256_ok: bool | None,
) -> None:
    await conn.execute(
        update(release_downloads)
        .where(release_downloads.c.id == download_id)
        .values(finished_at=at, bytes=sent, completed=completed, sha256_ok=sha256_ok)
    )


async def downloads_of(conn: AsyncConnection, release_id: str) -> list[dict[str, Any]]:
    result = await conn.execute(
        select(release_downloads)
        .where(release_downloads.c.release_id == release_id)
        .order_by(release_downloads.c.id)
    )
    return [
        {**r, "started_at": _utc(r["started_at"]), "finished_at": _utc(r["finished_at"])}
        for r in result.mappings()
    ]


async def matches_by_release(conn: AsyncConnection, person_ids: Sequence[str]) -> dict[str, int]:
    """For each release holding some of `person_ids`: how many of them it holds."""
    counts: dict[str, int] = {}
    ids = sorted(set(person_ids))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        result = await conn.execute(
            select(release_persons.c.release_id, func.count())
            .where(release_persons.c.person_id.in_(chunk))
            .group_by(release_persons.c.release_id)
        )
        for release_id, n in result.all():
            counts[release_id] = counts.get(release_id, 0) + int(n)
    return counts


async def files_with_sha256(conn: AsyncConnection, sha256: str) -> list[tuple[str, str]]:
    result = await conn.execute(
        select(release_files.c.release_id, release_files.c.name).where(
            release_files.c.sha256 == sha256
        )
    )
    return [(r, n) for r, n in result.all()]


async def releases_by_id(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, Release]:
    out: dict[str, Release] = {}
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), _CHUNK):
        result = await conn.execute(
            select(releases).where(releases.c.id.in_(wanted[start : start + _CHUNK]))
        )
        for row in result.mappings():
            out[row["id"]] = _release(row)
    return out
