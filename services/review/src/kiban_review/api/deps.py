"""Dependencies shared by the review routes: the context, paging and who may read what."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from kiban_common.security import ApiError, Principal, bearer_principal
from kiban_common.service import ServiceRuntime, current_runtime
from kiban_review.context import ReviewContext

# Scopes that may read any application (the committee and operators); `review:apply` reads
# only the caller's own.
COMMITTEE_SCOPES = ("review:decide", "review:chair", "admin")


def review_context(runtime: Annotated[ServiceRuntime, Depends(current_runtime)]) -> ReviewContext:
    context: ReviewContext = runtime.context
    return context


@dataclass(frozen=True)
class Paging:
    limit: int
    offset: int


def paging(
    limit: Annotated[int, Query(ge=1, le=200, description="items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")] = 0,
) -> Paging:
    return Paging(limit, offset)


@dataclass(frozen=True)
class Reader:
    """The caller of a read route: the committee sees every application, an applicant only
    their own."""

    principal: Principal
    committee: bool

    def may_see(self, applicant: str) -> bool:
        return self.committee or applicant == self.principal.subject


async def application_reader(
    principal: Annotated[Principal, Depends(bearer_principal)],
) -> Reader:
    if any(principal.has_scope(s) for s in COMMITTEE_SCOPES):
        return Reader(principal, committee=True)
    if principal.has_scope("review:apply"):
        return Reader(principal, committee=False)
    raise ApiError(
        403,
        "insufficient_scope",
        "this route needs scope 'review:apply', 'review:decide', 'review:chair' or 'admin'",
    )


Context = Annotated[ReviewContext, Depends(review_context)]
Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]
Page = Annotated[Paging, Depends(paging)]
