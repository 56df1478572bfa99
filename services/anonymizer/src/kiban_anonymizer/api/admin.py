"""`GET /v1/stats`, `GET /v1/builds/{id}` (contract) and `GET /v1/builds?release_id=`
(extension). Counts and build reports only: no pseudonym or clinical value is ever returned."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from kiban_anonymizer.store import builds, research
from kiban_common.security import ApiError, Principal, require_scope
from kiban_common.service import ServiceRuntime, current_runtime

router = APIRouter(prefix="/v1", tags=["anonymizer"])

Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]
Admin = Annotated[Principal, Depends(require_scope("admin"))]


class Stats(BaseModel):
    persons: int
    rows: dict[str, int]
    purged_persons: int
    builds: dict[str, int]


class BuildFile(BaseModel):
    name: str
    rows: int
    sha256: str
    uri: str | None = None


class Build(BaseModel):
    build_id: str
    release_id: str
    application_id: str
    kind: str
    status: str
    reason: str | None
    attempts: int
    purge_reruns: int
    excluded_after_purge: int
    requested_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    spec: dict[str, Any]
    files: list[BuildFile]
    report: dict[str, Any] | None


@router.get("/stats", response_model=Stats)
async def stats(runtime: Runtime, principal: Admin) -> Stats:
    async with runtime.transaction() as tx:
        counts = await research.counts(tx.session)
        by_status = await builds.status_counts(tx.session)
    persons = counts.pop("persons")
    purged = counts.pop("purged_persons")
    return Stats(persons=persons, rows=counts, purged_persons=purged, builds=by_status)


@router.get("/builds/{build_id}", response_model=Build)
async def get_build(build_id: str, runtime: Runtime, principal: Admin) -> Build:
    async with runtime.transaction() as tx:
        row = await builds.get(tx.session, build_id)
    if row is None:
        raise ApiError(404, "not_found", "no build with this id")
    return _build(row)


@router.get("/builds", response_model=list[Build])
async def list_builds(
    runtime: Runtime, principal: Admin, release_id: str | None = None
) -> list[Build]:
    async with runtime.transaction() as tx:
        rows = await builds.find(tx.session, release_id)
    return [_build(r) for r in rows]


def _build(row: dict[str, Any]) -> Build:
    return Build(
        build_id=row["build_id"],
        release_id=row["release_id"],
        application_id=row["application_id"],
        kind=row["kind"],
        status=row["status"],
        reason=row["reason"],
        attempts=row["attempts"],
        purge_reruns=row["purge_reruns"],
        excluded_after_purge=row["excluded_after_purge"],
        requested_at=row["requested_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        spec=row["spec"],
        files=[BuildFile(**f) for f in row["files"] or []],
        report=row["report"],
    )
