"""Notices given to patients (RULES.md 1–3) and the patients who need a renewed one."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from datetime import date
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from kiban_intake.api.deps import Institution, Runtime, intake_of

router = APIRouter(prefix="/v1/notices", tags=["notices"])


class NoticeIn(BaseModel):
    patient_id: str = Field(min_length=1, max_length=128)
    notified_on: date
    method: Literal["written", "verbal", "other"]
    guardian_notified: bool = False


class NoticesIn(BaseModel):
    notices: list[NoticeIn] = Field(min_length=1, max_length=10_000)


class Recorded(BaseModel):
    recorded: int


class DuePatient(BaseModel):
    patient_id: str
    turned_16_on: date
    last_notified_on: date
    held_records: int


class Due(BaseModel):
    patients: list[DuePatient]


@router.post("", response_model=Recorded)
async def record(body: NoticesIn, runtime: Runtime, institution: Institution) -> Recorded:
    intake = intake_of(runtime)
    async with runtime.transaction() as tx:
        n = await intake.record_notices(
            await tx.session.connection(), institution, [n.model_dump() for n in body.notices]
        )
    return Recorded(recorded=n)


@router.get("/due", response_model=Due)
async def due(runtime: Runtime, institution: Institution) -> Due:
    """Patients of the caller notified as minors who are 16 now: their new records are held
    until a renewed notice is recorded."""
    intake = intake_of(runtime)
    async with runtime.transaction() as tx:
        rows = await intake.notices_due(await tx.session.connection(), institution)
    return Due(patients=[DuePatient(**r) for r in rows])
