"""The committee at work: reviews, opening a review round, and the chair's decision."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from sqlalchemy import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import APPLICATION_DECIDED, ApplicationDecidedV1, DatasetSpec, Event
from kiban_common.security import ApiError, Principal, PrincipalKind, require_scope
from kiban_review.api._views import certification_problem
from kiban_review.api.deps import Context, Runtime
from kiban_review.api.schemas import (
    Approval,
    DecisionIn,
    DecisionOut,
    ReviewAccepted,
    ReviewIn,
    StatusOut,
)
from kiban_review.context import ReviewContext
from kiban_review.domain.certification import MESSAGES
from kiban_review.domain.register import approval_number
from kiban_review.domain.rule import Refusal, proposed_decision, refusals
from kiban_review.domain.spec import organization_key
from kiban_review.domain.workflow import REVIEWABLE, IllegalTransition, Status, check_transition
from kiban_review.store import applications as store
from kiban_review.store import committee
from kiban_review.store._time import as_utc

router = APIRouter(tags=["committee"])
Member = Annotated[Principal, Depends(require_scope("review:decide"))]
Chair = Annotated[Principal, Depends(require_scope("review:chair"))]

_NOT_FOUND = ApiError(404, "application_not_found", "no such application")
_APPROVAL_ATTEMPTS = 5  # approval numbers raced by concurrent decisions are retried


@router.post(
    "/v1/applications/{application_id}/reviews",
    status_code=201,
    summary="file a member's review on the five criteria",
    responses={409: {"description": "conflict of interest, already reviewed, or not reviewable"}},
)
async def review(
    application_id: str, body: ReviewIn, runtime: Runtime, context: Context, principal: Member
) -> ReviewAccepted:
    """The first review of a round moves a submitted (or resubmitted) application to
    `under_review`. One review per member per round."""
    if principal.kind is not PrincipalKind.COMMITTEE:
        raise ApiError(403, "not_a_committee_member", "reviews are filed as committee:<member_id>")
    now = context.now()
    try:
        async with runtime.transaction() as tx:
            conn = await tx.session.connection()
            member = await committee.member(conn, principal.id)
            if member is None:
                raise ApiError(403, "not_a_committee_member", "the caller is not on the committee")
            row = await _application(conn, application_id)
            current = Status(row["status"])
            if current not in REVIEWABLE:
                raise ApiError(
                    409, "not_reviewable", f"an application in state {current} cannot be reviewed"
                )
            affiliations = {organization_key(a) for a in member["affiliations"]}
            if row["organization_key"] in affiliations:
                raise ApiError(
                    409,
                    "conflict_of_interest",
                    "the member is affiliated with the applicant's organization",
                )
            review_id = await store.add_review(
                conn,
                {
                    "application_id": application_id,
                    "round": row["round"],
                    "member_id": principal.id,
                    "criteria": body.criteria.model_dump(),
                    "vote": body.vote.value,
                    "comment": body.comment,
                    "created_at": now,
                },
            )
            status = current
            if current is not Status.UNDER_REVIEW:
                await _open_round(conn, row, principal.subject, context)
                status = Status.UNDER_REVIEW
    except IntegrityError:
        raise ApiError(
            409, "already_reviewed", "the member has already reviewed this round"
        ) from None
    return ReviewAccepted(
        review_id=review_id,
        application_id=application_id,
        round=row["round"],
        member_id=principal.id,
        vote=body.vote,
        status=status.value,
    )


@router.post(
    "/v1/applications/{application_id}/start-review",
    summary="open the review round explicitly (the first review also does)",
    responses={409: {"description": "the application is not awaiting review"}},
)
async def start_review(
    application_id: str, runtime: Runtime, context: Context, principal: Chair
) -> StatusOut:
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        row = await _application(conn, application_id)
        await _open_round(conn, row, principal.subject, context)
    return StatusOut(
        application_id=application_id, status=Status.UNDER_REVIEW.value, round=row["round"]
    )


@router.post(
    "/v1/applications/{application_id}/decision",
    summary="the chair's decision under the committee's rule",
    responses={409: {"description": "the rule does not allow this decision (reason given)"}},
)
async def decide(
    application_id: str,
    runtime: Runtime,
    context: Context,
    principal: Chair,
    body: Annotated[DecisionIn | None, Body()] = None,
) -> DecisionOut:
    """Decides on the reviews of the current round. Without a body (or without `decision`)
    the decision is the one the votes carry. Every decision publishes
    `kiban.review.application-decided.v1`."""
    requested = Status(body.decision) if body and body.decision else None
    for attempt in range(_APPROVAL_ATTEMPTS):
        try:
            return await _decide(application_id, requested, runtime, context, principal)
        except IntegrityError:
            if attempt == _APPROVAL_ATTEMPTS - 1:
                raise ApiError(
                    409, "concurrent_change", "approval numbering was contended; retry"
                ) from None
    raise AssertionError("unreachable")


async def _decide(
    application_id: str,
    requested: Status | None,
    runtime: Runtime,
    context: ReviewContext,
    principal: Principal,
) -> DecisionOut:
    now = context.now()
    today = context.day_of(now)
    quorum = context.rules.quorum
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        row = await _application(conn, application_id)
        current = Status(row["status"])
        round_ = row["round"]
        ballots = await store.ballots(conn, application_id, round_)
        decision = requested or proposed_decision(ballots, quorum)
        try:
            check_transition(current, decision)
        except IllegalTransition as exc:
            raise ApiError(409, "illegal_transition", str(exc)) from None
        found = refusals(decision, ballots, quorum)
        if decision is Status.APPROVED and row["dataset"].get("kind") == "pseudonymized":
            problem = await certification_problem(conn, row["organization"], today)
            if problem is not None:
                found.append(Refusal(f"certification_{problem.value}", MESSAGES[problem]))
        if found:
            raise ApiError(409, found[0].code, "; ".join(r.message for r in found))
        values: dict[str, object] = {
            "status": decision.value,
            "decision": decision.value,
            "decided_at": now,
            "updated_at": now,
        }
        approval: Approval | None = None
        if decision is Status.APPROVED:
            seq = await store.next_approval_seq(conn, today.year)
            values.update(approval_year=today.year, approval_seq=seq, approved_on=today)
            approval = Approval(no=approval_number(today.year, seq), approved_on=today)
        if not await store.move(
            conn, application_id, expected=current, expected_round=round_, values=values
        ):
            raise ApiError(409, "concurrent_change", "the application changed meanwhile; retry")
        await store.record_transition(
            conn,
            application_id,
            round_=round_,
            from_status=current,
            to_status=decision,
            actor=principal.subject,
            at=now,
        )
        await tx.emit(
            Event(
                type=APPLICATION_DECIDED,
                source="/kiban/review",
                key=application_id,
                data=ApplicationDecidedV1(
                    application_id=application_id,
                    decision=decision.value,
                    decided_at=now,
                    organization=row["organization"],
                    user_category=row["user_category"],
                    dataset=DatasetSpec.model_validate(row["dataset"]),
                    applicant=row["applicant"],
                ),
            )
        )
    return DecisionOut(
        application_id=application_id,
        status=decision.value,
        round=round_,
        decided_at=as_utc(now),
        approval=approval,
    )


async def _application(conn: AsyncConnection, application_id: str) -> RowMapping:
    row = await store.get(conn, application_id)
    if row is None:
        raise _NOT_FOUND
    return row


async def _open_round(
    conn: AsyncConnection, row: RowMapping, actor: str, context: ReviewContext
) -> None:
    """submitted | resubmitted → under_review, recorded; 409 from any other state."""
    current = Status(row["status"])
    try:
        check_transition(current, Status.UNDER_REVIEW)
    except IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    now = context.now()
    moved = await store.move(
        conn,
        row["application_id"],
        expected=current,
        expected_round=row["round"],
        values={"status": Status.UNDER_REVIEW.value, "updated_at": now},
    )
    if moved:  # else a concurrent first review opened it: nothing more to record
        await store.record_transition(
            conn,
            row["application_id"],
            round_=row["round"],
            from_status=current,
            to_status=Status.UNDER_REVIEW,
            actor=actor,
            at=now,
        )
