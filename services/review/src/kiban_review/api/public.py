"""The public register of approvals (no authentication) and the promptness statistics."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from kiban_common.security import Principal, require_scope
from kiban_review.api.deps import Context, Page, Runtime
from kiban_review.api.schemas import DecisionTime, RegisterEntry, Stats
from kiban_review.domain.promptness import days_between, median_days
from kiban_review.domain.register import approval_number
from kiban_review.store import applications as store
from kiban_review.store._time import as_utc

router = APIRouter()
TOTAL_HEADER = "X-Total-Count"


@router.get(
    "/v1/public/approvals",
    tags=["public"],
    summary="the public register of approved uses (no authentication)",
    response_model=list[RegisterEntry],
)
async def approvals(runtime: Runtime, page: Page, response: Response) -> list[RegisterEntry]:
    """Newest approval first: number, approval date, title, data items, user category, and
    nothing else about the application or the applicant. Paged with `limit`/`offset`; the
    number of approvals is in the `X-Total-Count` header."""
    async with runtime.transaction() as tx:
        rows, total = await store.approval_page(
            await tx.session.connection(), page.limit, page.offset
        )
    response.headers[TOTAL_HEADER] = str(total)
    return [
        RegisterEntry(
            no=approval_number(r["approval_year"], r["approval_seq"]),
            approved_on=r["approved_on"],
            title=r["title"],
            data_items=list(r["data_items"]),
            user_category=r["user_category"],
        )
        for r in rows
    ]


@router.get("/v1/stats", tags=["statistics"], summary="time from submission to decision")
async def stats(
    runtime: Runtime,
    context: Context,
    page: Page,
    _: Annotated[Principal, Depends(require_scope("admin"))],
) -> Stats:
    """Per application, the days from first submission to its latest decision, newest decision
    first (paged); and the median over the applications decided in the window
    (`KIBAN_REVIEW__STATS_WINDOW_DAYS`, 90 days by default)."""
    now = context.now()
    window = context.rules.stats_window_days
    async with runtime.transaction() as tx:
        rows = await store.decided_between(
            await tx.session.connection(), now - timedelta(days=window), now
        )
    times = [
        DecisionTime(
            application_id=r["application_id"],
            decision=r["decision"],
            submitted_at=as_utc(r["submitted_at"]),
            decided_at=as_utc(r["decided_at"]),
            days=days_between(as_utc(r["submitted_at"]), as_utc(r["decided_at"])),
        )
        for r in rows
    ]
    return Stats(
        as_of=now,
        window_days=window,
        decided=len(times),
        median_days_to_decision=median_days([t.days for t in times]),
        applications=times[page.offset : page.offset + page.limit],
        total=len(times),
        limit=page.limit,
        offset=page.offset,
    )
