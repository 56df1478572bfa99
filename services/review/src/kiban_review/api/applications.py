"""Applications: submission, reading, listing and resubmission after a request to revise."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from kiban_common.security import ApiError, Principal, require_scope
from kiban_review.api._views import (
    applicant_of,
    application_values,
    application_view,
    certification_problem,
    check_organization,
    refuse_uncertified,
    summary_view,
)
from kiban_review.api.deps import Context, Page, Reader, Runtime, application_reader
from kiban_review.api.schemas import (
    ApplicationAccepted,
    ApplicationIn,
    ApplicationOut,
    ApplicationPage,
    StatusOut,
)
from kiban_review.domain.workflow import IllegalTransition, Status, check_transition
from kiban_review.store import applications as store

router = APIRouter(tags=["applications"])
Applicant = Annotated[Principal, Depends(require_scope("review:apply"))]
AnyReader = Annotated[Reader, Depends(application_reader)]

_NOT_FOUND = ApiError(404, "application_not_found", "no such application")


@router.post(
    "/v1/applications",
    status_code=201,
    summary="apply for data",
    responses={
        403: {"description": "organization differs from the token's claim"},
        422: {"description": "invalid, or pseudonymized for an uncertified organization"},
    },
)
async def submit(
    body: ApplicationIn, runtime: Runtime, context: Context, principal: Applicant
) -> ApplicationAccepted:
    applicant = applicant_of(principal)
    check_organization(principal, body)
    now = context.now()
    application_id = secrets.token_hex(16)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        if body.dataset.kind == "pseudonymized":
            problem = await certification_problem(conn, body.organization, context.day_of(now))
            if problem is not None:
                raise refuse_uncertified(problem)
        await store.add(
            conn,
            {
                "application_id": application_id,
                "applicant": applicant,
                **application_values(body),
                "status": Status.SUBMITTED.value,
                "round": 1,
                "submitted_at": now,
                "updated_at": now,
            },
        )
        await store.record_transition(
            conn,
            application_id,
            round_=1,
            from_status=None,
            to_status=Status.SUBMITTED,
            actor=applicant,
            at=now,
        )
    return ApplicationAccepted(
        application_id=application_id, status=Status.SUBMITTED.value, round=1, submitted_at=now
    )


@router.get("/v1/applications", summary="applications (paged, newest first)")
async def list_applications(
    runtime: Runtime,
    reader: AnyReader,
    page: Page,
    status: Annotated[Status | None, Query(description="only this state")] = None,
) -> ApplicationPage:
    """The committee and operators see every application, an applicant only their own."""
    async with runtime.transaction() as tx:
        rows, total = await store.page(
            await tx.session.connection(),
            applicant=None if reader.committee else reader.principal.subject,
            status=status,
            limit=page.limit,
            offset=page.offset,
        )
    return ApplicationPage(
        items=[summary_view(r) for r in rows], total=total, limit=page.limit, offset=page.offset
    )


@router.get(
    "/v1/applications/{application_id}",
    summary="one application with its transitions",
    responses={404: {"description": "no such application, or not the caller's"}},
)
async def get_application(
    application_id: str, runtime: Runtime, reader: AnyReader
) -> ApplicationOut:
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        row = await store.get(conn, application_id)
        if row is None or not reader.may_see(row["applicant"]):
            raise _NOT_FOUND
        transitions = await store.transitions_of(conn, application_id)
        reviews = await store.reviews_of(conn, application_id) if reader.committee else None
    return application_view(row, transitions, reviews)


@router.put(
    "/v1/applications/{application_id}",
    summary="resubmit an application the committee asked to revise",
    responses={409: {"description": "the application is not awaiting revision"}},
)
async def resubmit(
    application_id: str,
    body: ApplicationIn,
    runtime: Runtime,
    context: Context,
    principal: Applicant,
) -> StatusOut:
    """The whole application again, revised; it starts a new review round."""
    check_organization(principal, body)
    now = context.now()
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        row = await store.get(conn, application_id)
        if row is None or row["applicant"] != principal.subject:
            raise _NOT_FOUND
        current = Status(row["status"])
        try:
            check_transition(current, Status.RESUBMITTED)
        except IllegalTransition as exc:
            raise ApiError(409, "illegal_transition", str(exc)) from None
        if body.dataset.kind == "pseudonymized":
            problem = await certification_problem(conn, body.organization, context.day_of(now))
            if problem is not None:
                raise refuse_uncertified(problem)
        round_ = row["round"] + 1
        moved = await store.move(
            conn,
            application_id,
            expected=current,
            expected_round=row["round"],
            values={
                **application_values(body),
                "status": Status.RESUBMITTED.value,
                "round": round_,
                "updated_at": now,
            },
        )
        if not moved:
            raise ApiError(409, "concurrent_change", "the application changed meanwhile; retry")
        await store.record_transition(
            conn,
            application_id,
            round_=round_,
            from_status=current,
            to_status=Status.RESUBMITTED,
            actor=principal.subject,
            at=now,
        )
    return StatusOut(application_id=application_id, status=Status.RESUBMITTED.value, round=round_)
