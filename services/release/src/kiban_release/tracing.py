"""`trace`: which release (and so which recipient) a file or a leaked excerpt came from.

Reads the file (digest, `person_id` values, or every value when a leaked excerpt has lost its
header), looks them up in the release service's database and lets `domain.trace.judge` decide.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from kiban_common.db import create_engine
from kiban_release import datafile
from kiban_release.domain.release import Release
from kiban_release.domain.trace import Candidate, TraceResult, judge
from kiban_release.store import releases as store


async def trace_file(engine: AsyncEngine, path: Path) -> TraceResult:
    found = await asyncio.to_thread(datafile.digest, path)
    async with engine.connect() as conn:
        exact = await store.files_with_sha256(conn, found.sha256)
        if exact:
            # Byte for byte a released file: no need to look its ids up one by one.
            release_id, name = exact[0]
            release = (await store.releases_by_id(conn, [release_id]))[release_id]
            rows = next(f.rows for f in await store.files_of(conn, release_id) if f.name == name)
            candidate = _candidate(release, rows)
            return judge(rows, [candidate], exact=candidate, exact_name=name)
    ids = await asyncio.to_thread(datafile.read_ids, path)
    notes: list[str] = []
    wanted = ids.person_ids
    if not ids.has_person_column:
        notes.append("no person_id column: every value of the file was looked up")
        wanted = ids.loose_values
    async with engine.connect() as conn:
        counts = await store.matches_by_release(conn, sorted(wanted))
        releases = await store.releases_by_id(conn, counts)
    candidates = [_candidate(r, counts[r.id]) for r in releases.values()]
    return judge(len(wanted), candidates, notes=notes)


def _candidate(release: Release, matched: int) -> Candidate:
    return Candidate(
        release_id=release.id,
        application_id=release.application_id,
        recipient=release.applicant,
        kind=release.kind,
        status=release.status.value,
        matched=matched,
    )


async def trace_with_url(database_url: str, path: Path) -> TraceResult:
    engine = create_engine(database_url)
    try:
        return await trace_file(engine, path)
    finally:
        await engine.dispose()
