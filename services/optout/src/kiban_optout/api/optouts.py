"""`/v1/optouts`: take stop requests and show what became of them."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.security import ApiError, Principal, bearer_principal
from kiban_common.service import ServiceRuntime, current_runtime
from kiban_optout.api._taking import take
from kiban_optout.api.schemas import (
    HistoryEntry,
    OptoutAccepted,
    OptoutIn,
    OptoutList,
    OptoutStatus,
)
from kiban_optout.context import OptoutContext
from kiban_optout.domain.ratelimit import retry_after_header
from kiban_optout.domain.request import (
    ADMIN_SCOPE,
    SELF_SCOPE,
    WINDOW_SCOPE,
    Caller,
    Draft,
    Refused,
    accept,
)
from kiban_optout.domain.status import aggregate
from kiban_optout.domain.subject import SubjectError, claims_subject, parse_subject
from kiban_optout.store import queries

router = APIRouter(prefix="/v1/optouts", tags=["optouts"])
Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]

_NOT_FOUND = ApiError(404, "not_found", "no such opt-out request")


async def limited_principal(
    runtime: Runtime, principal: Annotated[Principal, Depends(bearer_principal)]
) -> Principal:
    """The verified caller, within its rate limit (else 429 with `Retry-After`)."""
    ctx: OptoutContext = runtime.context
    limiter = ctx.window_limiter if principal.kind == "institution" else ctx.patient_limiter
    if limiter is not None:
        wait = limiter.acquire(principal.subject)
        if wait > 0:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests from this principal; retry later",
                headers={"Retry-After": retry_after_header(wait)},
            )
    return principal


Caller_ = Annotated[Principal, Depends(limited_principal)]


async def submitting_principal(principal: Caller_) -> Principal:
    """A caller that may file a request at all (`optout:self` or `optout:window`), checked
    before the body is looked at, so a token lacking the scope is 403 whatever it sends."""
    if not (principal.has_scope(SELF_SCOPE) or principal.has_scope(WINDOW_SCOPE)):
        raise ApiError(
            403,
            "insufficient_scope",
            f"filing a request needs scope '{SELF_SCOPE}' or '{WINDOW_SCOPE}'",
        )
    return principal


Submitter = Annotated[Principal, Depends(submitting_principal)]


def _caller(principal: Principal) -> Caller:
    return Caller(
        subject=principal.subject,
        kind=principal.kind.value,
        id=principal.id,
        scopes=principal.scopes,
        claims=principal.claims,
    )


@router.post(
    "",
    status_code=202,
    response_model=OptoutAccepted,
    summary="ask to stop provision (and delete), for oneself, a minor, a deceased person, or "
    "at an institution's counter",
    responses={
        403: {"description": "scope missing, or the subject differs from the token's claims"},
        422: {"description": "a subject field is missing or invalid; nothing was stored"},
        429: {"description": "rate limit of this principal reached (see Retry-After)"},
    },
)
async def post_optout(principal: Submitter, runtime: Runtime, body: OptoutIn) -> OptoutAccepted:
    ctx: OptoutContext = runtime.context
    requester = body.requester or (
        "institution_window" if principal.kind == "institution" else "self"
    )
    draft = Draft(
        action=body.action,
        scope=body.scope,
        requester=requester,
        institution_code=body.institution_code,
        subject=body.subject.model_dump(exclude_none=True) if body.subject else None,
    )
    try:
        accepted = accept(draft, _caller(principal), today=ctx.today(), policy=ctx.policy)
    except Refused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    taken = await take(runtime, accepted, principal.subject)
    return OptoutAccepted(
        optout_id=taken.optout_id,
        status=taken.status,
        received_at=taken.received_at,
        action=taken.action,
        scope=taken.scope,
        outcome=taken.outcome,
    )


@router.get(
    "/me",
    response_model=OptoutList,
    summary="the caller's requests: those they filed and those about them",
)
async def my_optouts(runtime: Runtime, principal: Caller_) -> OptoutList:
    if not principal.has_scope(SELF_SCOPE):
        raise ApiError(403, "insufficient_scope", f"this route needs scope '{SELF_SCOPE}'")
    ctx: OptoutContext = runtime.context
    async with runtime.sessions() as session:
        conn = await session.connection()
        rows = await queries.visible(
            conn, principal=principal.subject, subject_index=_own_index(ctx, principal)
        )
        views = await _views(conn, rows)
    if views:
        await _audit_read(runtime, principal, [v.optout_id for v in views], "/v1/optouts/me")
    return OptoutList(optouts=views)


@router.get(
    "/{optout_id}",
    response_model=OptoutStatus,
    summary="status of one request, per core service; only its requesters and its subject see it",
    responses={404: {"description": "no such request, or not the caller's"}},
)
async def get_optout(optout_id: str, runtime: Runtime, principal: Caller_) -> OptoutStatus:
    if not any(principal.has_scope(s) for s in (SELF_SCOPE, WINDOW_SCOPE, ADMIN_SCOPE)):
        raise ApiError(
            403,
            "insufficient_scope",
            f"this route needs scope '{SELF_SCOPE}', '{WINDOW_SCOPE}' or '{ADMIN_SCOPE}'",
        )
    ctx: OptoutContext = runtime.context
    async with runtime.sessions() as session:
        conn = await session.connection()
        row = await queries.get(conn, optout_id)
        if row is None or not await _may_read(conn, ctx, principal, optout_id):
            raise _NOT_FOUND  # another's request looks exactly like no request
        (view,) = await _views(conn, [row])
    await _audit_read(runtime, principal, [row.optout_id], "/v1/optouts/{optout_id}")
    return view


async def _audit_read(
    runtime: ServiceRuntime, principal: Principal, optout_ids: list[str], route: str
) -> None:
    """Which requests a principal read, in the hash-chained audit log. Reads run in a session
    of their own first: on SQLite a transaction that reads and then writes can be refused
    when another writer committed in between."""
    async with runtime.transaction() as tx:
        tx.audit("optout.read", refs=optout_ids, principal=principal.subject, route=route)


async def _may_read(
    conn: AsyncConnection, ctx: OptoutContext, principal: Principal, optout_id: str
) -> bool:
    if principal.has_scope(ADMIN_SCOPE):
        return True
    if await queries.filed_by(conn, optout_id, principal.subject):
        return True
    own = _own_index(ctx, principal) if principal.has_scope(SELF_SCOPE) else None
    return own is not None and own == await queries.subject_index_of(conn, optout_id)


def _own_index(ctx: OptoutContext, principal: Principal) -> str | None:
    """The blind index of the patient named by the token's verified claims, if complete."""
    if principal.kind != "patient":
        return None
    try:
        subject = parse_subject(claims_subject(principal.claims), today=ctx.today())
    except SubjectError:
        return None
    return ctx.subject_index(subject)


async def _views(conn: AsyncConnection, rows: list[queries.RequestRow]) -> list[OptoutStatus]:
    sent = await queries.dispatches_for(conn, [r.optout_id for r in rows])
    acks = await queries.acks_for(conn, [d.dispatch_id for ds in sent.values() for d in ds])
    views = []
    for row in rows:
        view = aggregate(acks.get(row.dispatch_id, []))
        views.append(
            OptoutStatus(
                status=view.status,
                applied=OptoutStatus.applied_of(view),
                matched_persons=view.matched_persons,
                optout_id=row.optout_id,
                action=_literal(row.action),
                scope=_literal(row.scope),
                institution_code=row.institution_code,
                requester=row.requester,
                received_at=row.received_at,
                updated_at=row.updated_at,
                applied_at=view.applied_at,
                history=[
                    HistoryEntry(
                        action=_literal(d.action),
                        sent_at=d.dispatched_at,
                        status=aggregate(acks.get(d.dispatch_id, [])).status,
                    )
                    for d in _oldest_first(sent.get(row.optout_id, []), row.dispatch_id)
                ],
            )
        )
    return views


def _oldest_first(sent: list[queries.DispatchRow], current: str) -> list[queries.DispatchRow]:
    """By time sent; the one in force last even when two were sent in the same instant."""
    return sorted(sent, key=lambda d: (d.dispatched_at, d.dispatch_id == current))


def _literal(value: str) -> Any:
    """A stored enum value (validated again by the response model)."""
    return value
