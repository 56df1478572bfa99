"""Committee members and certified users (operators only)."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy.exc import IntegrityError

from kiban_common.security import ApiError, Principal, require_scope
from kiban_review.api.deps import Context, Page, Runtime
from kiban_review.api.schemas import (
    CertifiedUserIn,
    CertifiedUserOut,
    CertifiedUserPage,
    MemberIn,
    MemberOut,
    MemberPage,
)
from kiban_review.domain.spec import organization_key
from kiban_review.store import committee as store
from kiban_review.store._time import as_utc

router = APIRouter(tags=["committee"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.post("/v1/committee/members", status_code=201, summary="add a committee member")
async def add_member(body: MemberIn, runtime: Runtime, context: Context, _: Admin) -> MemberOut:
    row = {
        "member_id": body.member_id,
        "name": body.name,
        "expertise": body.expertise.value,
        "affiliations": list(body.affiliations),
        "created_at": context.now(),
    }
    try:
        async with runtime.transaction() as tx:
            await store.add_member(await tx.session.connection(), row)
    except IntegrityError:
        raise ApiError(409, "member_exists", "member_id: a member with this id exists") from None
    return MemberOut(**row)


@router.get("/v1/committee/members", summary="committee members (paged)")
async def list_members(runtime: Runtime, page: Page, _: Admin) -> MemberPage:
    async with runtime.transaction() as tx:
        rows, total = await store.member_page(
            await tx.session.connection(), page.limit, page.offset
        )
    return MemberPage(
        items=[MemberOut(**{**r, "created_at": as_utc(r["created_at"])}) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post("/v1/certified-users", status_code=201, summary="record a certified user")
async def add_certified_user(
    body: CertifiedUserIn, runtime: Runtime, context: Context, _: Admin
) -> CertifiedUserOut:
    row = {
        "certification_id": secrets.token_hex(12),
        "organization": body.organization,
        "organization_key": organization_key(body.organization),
        "certified_on": body.certified_on,
        "expires_on": body.expires_on,
        "created_at": context.now(),
    }
    async with runtime.transaction() as tx:
        await store.add_certification(await tx.session.connection(), row)
    return CertifiedUserOut(**row)


@router.get("/v1/certified-users", summary="certified users (paged, newest first)")
async def list_certified_users(runtime: Runtime, page: Page, _: Admin) -> CertifiedUserPage:
    async with runtime.transaction() as tx:
        rows, total = await store.certification_page(
            await tx.session.connection(), page.limit, page.offset
        )
    return CertifiedUserPage(
        items=[CertifiedUserOut(**{**r, "created_at": as_utc(r["created_at"])}) for r in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )
