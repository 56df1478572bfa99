"""Rows → response bodies, and checks shared by the application routes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from sqlalchemy import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.security import ApiError, Principal
from kiban_review.api.schemas import (
    ApplicationIn,
    ApplicationOut,
    ApplicationSummary,
    Approval,
    ReviewOut,
    TransitionOut,
)
from kiban_review.domain.certification import MESSAGES, CertificationState, certification_state
from kiban_review.domain.register import approval_number
from kiban_review.domain.spec import organization_key
from kiban_review.store import committee
from kiban_review.store._time import as_utc, maybe_utc

# The applicant travels in `application-decided` as an event `Code`.
_SUBJECT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def applicant_of(principal: Principal) -> str:
    if not _SUBJECT.fullmatch(principal.subject):
        raise ApiError(403, "unsupported_subject", "the token's subject is not a usable id")
    return principal.subject


def check_organization(principal: Principal, body: ApplicationIn) -> None:
    """A researcher applies for their own organization only (the token's `organization`
    claim), so nobody borrows another organization's certification."""
    claimed = principal.claims.get("organization")
    if not isinstance(claimed, str) or not claimed.strip():
        raise ApiError(
            403,
            "organization_claim_missing",
            "the token has no 'organization' claim; applicants apply for their organization",
        )
    if organization_key(claimed) != organization_key(body.organization):
        raise ApiError(
            403,
            "organization_mismatch",
            "organization: differs from the token's 'organization' claim",
        )


async def certification_problem(
    conn: AsyncConnection, organization: str, day: date
) -> CertificationState | None:
    """None when the organization is a certified user on `day`, else why not."""
    state = certification_state(
        await committee.certifications(conn, organization_key(organization)), day
    )
    return None if state is CertificationState.VALID else state


def refuse_uncertified(state: CertificationState) -> ApiError:
    return ApiError(422, f"certification_{state.value}", MESSAGES[state])


def approval_of(row: RowMapping) -> Approval | None:
    if row["approval_year"] is None or row["approval_seq"] is None:
        return None
    return Approval(
        no=approval_number(row["approval_year"], row["approval_seq"]),
        approved_on=row["approved_on"],
    )


def application_view(
    row: RowMapping,
    transitions: Sequence[RowMapping],
    reviews: Sequence[RowMapping] | None,
) -> ApplicationOut:
    """The whole application; `reviews` (and who moved it) only for the committee."""
    committee_view = reviews is not None
    return ApplicationOut(
        application_id=row["application_id"],
        status=row["status"],
        round=row["round"],
        applicant=row["applicant"],
        title=row["title"],
        organization=row["organization"],
        user_category=row["user_category"],
        purpose=row["purpose"],
        scientific_rationale=row["scientific_rationale"],
        publication_plan=row["publication_plan"],
        funding_and_coi=row["funding_and_coi"],
        data_items=list(row["data_items"]),
        dataset=dict(row["dataset"]),
        submitted_at=as_utc(row["submitted_at"]),
        updated_at=as_utc(row["updated_at"]),
        decision=row["decision"],
        decided_at=maybe_utc(row["decided_at"]),
        approval=approval_of(row),
        transitions=[
            TransitionOut(
                from_status=t["from_status"],
                to_status=t["to_status"],
                round=t["round"],
                at=as_utc(t["at"]),
                actor=t["actor"] if committee_view else None,
            )
            for t in transitions
        ],
        reviews=None
        if reviews is None
        else [
            ReviewOut(
                review_id=r["id"],
                round=r["round"],
                member_id=r["member_id"],
                expertise=r["expertise"],
                criteria=dict(r["criteria"]),
                vote=r["vote"],
                comment=r["comment"],
                created_at=as_utc(r["created_at"]),
            )
            for r in reviews
        ],
    )


def summary_view(row: RowMapping) -> ApplicationSummary:
    return ApplicationSummary(
        application_id=row["application_id"],
        status=row["status"],
        round=row["round"],
        title=row["title"],
        organization=row["organization"],
        user_category=row["user_category"],
        submitted_at=as_utc(row["submitted_at"]),
        decided_at=maybe_utc(row["decided_at"]),
    )


def application_values(body: ApplicationIn) -> dict[str, object]:
    """The columns an applicant sets (on submission and on resubmission)."""
    return {
        "title": body.title,
        "organization": body.organization,
        "organization_key": organization_key(body.organization),
        "user_category": body.user_category,
        "purpose": body.purpose,
        "scientific_rationale": body.scientific_rationale,
        "publication_plan": body.publication_plan,
        "funding_and_coi": body.funding_and_coi,
        "data_items": list(body.data_items),
        "dataset": body.dataset.model_dump(mode="json", exclude_none=True),
    }
