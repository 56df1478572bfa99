"""Institutions (admin): register, list, suspend and reinstate."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from kiban_common.security import ApiError, Principal, require_scope
from kiban_intake.api.deps import Runtime, intake_of
from kiban_intake.store import queries as q

router = APIRouter(prefix="/v1/institutions", tags=["institutions"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


class InstitutionIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=256)
    kind: Literal["hospital", "clinic", "pharmacy", "municipality", "school", "insurer"]


class InstitutionOut(BaseModel):
    code: str
    name: str
    kind: str
    status: Literal["active", "suspended"]
    registered_at: datetime
    suspended_at: datetime | None = None


@router.post("", status_code=201, response_model=InstitutionOut)
async def register(body: InstitutionIn, runtime: Runtime, _: Admin) -> InstitutionOut:
    row = {
        **body.model_dump(),
        "status": "active",
        "registered_at": intake_of(runtime).now(),
        "suspended_at": None,
    }
    try:
        async with runtime.transaction() as tx:
            await q.add_institution(await tx.session.connection(), row)
    except IntegrityError:
        raise ApiError(409, "already_registered", "an institution with this code exists") from None
    return InstitutionOut(**row)


@router.get("", response_model=list[InstitutionOut])
async def list_all(runtime: Runtime, _: Admin) -> list[InstitutionOut]:
    async with runtime.engine.connect() as conn:
        return [InstitutionOut(**row) for row in await q.list_institutions(conn)]


async def _set_status(runtime: Runtime, code: str, status: str) -> InstitutionOut:
    at = intake_of(runtime).now() if status == "suspended" else None
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        if await q.get_institution(conn, code) is None:
            raise ApiError(404, "not_found", "no institution with this code")
        await q.set_institution_status(conn, code, status, at)
        row = await q.get_institution(conn, code)
    assert row is not None
    return InstitutionOut(**row)


@router.post("/{code}/suspend", response_model=InstitutionOut)
async def suspend(code: str, runtime: Runtime, _: Admin) -> InstitutionOut:
    """A suspended institution cannot submit until reinstated; what it sent stays."""
    return await _set_status(runtime, code, "suspended")


@router.post("/{code}/reinstate", response_model=InstitutionOut)
async def reinstate(code: str, runtime: Runtime, _: Admin) -> InstitutionOut:
    return await _set_status(runtime, code, "active")
