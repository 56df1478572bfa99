"""`/v1/releases`: the recipient lists, reads and downloads; operators read and revoke.

Only the applicant of the approved application (the `applicant` of the decision event) is the
recipient. Anybody else asking for a release gets 404, as if it did not exist, so release ids
leak nothing; operators (`admin`) may read every release and revoke, but never download.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

import base64
import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from kiban_common.security import ApiError, Principal, bearer_principal, require_scope
from kiban_common.service import ServiceRuntime, current_runtime
from kiban_release.api.schemas import (
    DownloadView,
    ReleasePage,
    ReleaseView,
    RevokeRequest,
    SigningKeyView,
)
from kiban_release.context import ReleaseContext
from kiban_release.domain.access import download_refusal
from kiban_release.domain.manifest import ALGORITHM
from kiban_release.domain.release import REVOCABLE, Release, ReleaseStatus
from kiban_release.events import release_published
from kiban_release.store import releases as store

router = APIRouter(tags=["releases"])

Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]
DOWNLOAD = "release:download"
ADMIN = "admin"

_REFUSAL_STATUS = {
    "not_ready": 409,
    "release_failed": 409,
    "release_revoked": 410,
    "release_expired": 410,
    "download_limit_reached": 403,
}
_MEDIA_TYPES = {
    ".csv": "text/csv; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".json": "application/json",
}


async def reader(principal: Annotated[Principal, Depends(bearer_principal)]) -> Principal:
    """Recipients (`release:download`) and operators (`admin`) may read releases."""
    if not (principal.has_scope(DOWNLOAD) or principal.has_scope(ADMIN)):
        raise ApiError(
            403, "insufficient_scope", f"this route needs scope '{DOWNLOAD}' or '{ADMIN}'"
        )
    return principal


Reader = Annotated[Principal, Depends(reader)]


def _not_found() -> ApiError:
    return ApiError(404, "release_not_found", "no such release")


async def _visible(runtime: ServiceRuntime, principal: Principal, release_id: str) -> Release:
    async with runtime.sessions() as session:
        conn = await session.connection()
        release = await store.get_release(conn, release_id)
    if release is None or not release.visible_to(
        principal.subject, admin=principal.has_scope(ADMIN)
    ):
        raise _not_found()
    return release


async def _remaining(
    runtime: ServiceRuntime, release: Release, principal: Principal
) -> dict[str, int] | None:
    if principal.subject != release.applicant:
        return None
    context: ReleaseContext = runtime.context
    async with runtime.sessions() as session:
        used = await store.downloads_by_file(
            await session.connection(), release.id, principal.subject
        )
    limit = context.settings.release.download_limit
    return {f.name: max(0, limit - used.get(f.name, 0)) for f in release.files}


@router.get("/v1/releases", summary="the caller's releases (the applicant's)")
async def list_releases(
    runtime: Runtime,
    principal: Reader,
    application_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ReleasePage:
    """A recipient sees only releases made for them (another applicant's application lists as
    empty); an operator sees every release."""
    applicant = None if principal.has_scope(ADMIN) else principal.subject
    async with runtime.sessions() as session:
        items = await store.list_releases(
            await session.connection(),
            applicant=applicant,
            application_id=application_id,
            limit=limit + 1,
            offset=offset,
        )
    more = len(items) > limit
    return ReleasePage(
        items=[ReleaseView.of(r) for r in items[:limit]],
        limit=limit,
        offset=offset,
        next_offset=offset + limit if more else None,
    )


@router.get(
    "/v1/releases/{release_id}",
    summary="one release: status, files, privacy report, expiry",
    responses={404: {"description": "no such release, or not the caller's"}},
)
async def get_release(release_id: str, runtime: Runtime, principal: Reader) -> ReleaseView:
    release = await _visible(runtime, principal, release_id)
    return ReleaseView.of(release, remaining=await _remaining(runtime, release, principal))


@router.get(
    "/v1/releases/{release_id}/manifest",
    summary="the signed manifest (Ed25519) of a ready release",
    responses={404: {"description": "no such release, or no manifest yet"}},
)
async def get_manifest(release_id: str, runtime: Runtime, principal: Reader) -> dict[str, object]:
    release = await _visible(runtime, principal, release_id)
    if release.manifest is None:
        raise ApiError(404, "manifest_not_issued", "the release has no manifest (not built)")
    return release.manifest


@router.get(
    "/v1/releases/{release_id}/fee",
    summary="the fee statement of a release",
    responses={404: {"description": "no such release, or no statement yet"}},
)
async def get_fee(release_id: str, runtime: Runtime, principal: Reader) -> dict[str, object]:
    release = await _visible(runtime, principal, release_id)
    if release.fee is None:
        raise ApiError(404, "fee_not_issued", "a fee statement is issued when a release is ready")
    return release.fee


@router.get(
    "/v1/releases/{release_id}/downloads",
    summary="the download log of a release (operators)",
)
async def get_downloads(
    release_id: str,
    runtime: Runtime,
    principal: Annotated[Principal, Depends(require_scope(ADMIN))],
) -> list[DownloadView]:
    await _visible(runtime, principal, release_id)
    async with runtime.sessions() as session:
        rows = await store.downloads_of(await session.connection(), release_id)
    return [DownloadView.model_validate(r) for r in rows]


@router.get(
    "/v1/releases/{release_id}/files/{name}",
    summary="download a file (the recipient only, while ready); every download is logged",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        404: {"description": "no such release or file, or not the caller's"},
        403: {"description": "download limit reached"},
        409: {"description": "not ready, or failed"},
        410: {"description": "revoked or expired"},
    },
)
async def download(
    release_id: str,
    name: str,
    request: Request,
    runtime: Runtime,
    principal: Annotated[Principal, Depends(require_scope(DOWNLOAD))],
) -> StreamingResponse:
    context: ReleaseContext = runtime.context
    source = request.client.host if request.client else None
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        release = await store.get_release(conn, release_id, for_update=True)
        if release is None or release.applicant is None or principal.subject != release.applicant:
            raise _not_found()
        file = next((f for f in release.files if f.name == name), None)
        if file is None and release.status is ReleaseStatus.READY:
            raise ApiError(404, "file_not_found", "the release has no file of that name")
        now = context.clock.now()
        used = await store.count_downloads(conn, release.id, name, principal.subject)
        refusal = download_refusal(
            status=release.status,
            expires_at=release.expires_at,
            now=now,
            used=used,
            limit=context.settings.release.download_limit,
        )
        if refusal is not None:
            raise ApiError(_REFUSAL_STATUS[refusal.code], refusal.code, refusal.message)
        assert file is not None
        path = anyio.Path(file.path)
        if not await path.is_file() or (await path.stat()).st_size != file.bytes:
            raise ApiError(503, "file_unavailable", "the file is not available now")
        download_id = await store.start_download(
            conn,
            release_id=release.id,
            file_name=name,
            principal=principal.subject,
            source=source,
            at=now,
        )
    digest = base64.b64encode(bytes.fromhex(file.sha256)).decode()
    return StreamingResponse(
        _stream(runtime, download_id, path, file.sha256),
        media_type=_MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={
            "Content-Length": str(file.bytes),
            "Content-Disposition": f'attachment; filename="{name}"',
            "Repr-Digest": f"sha-256=:{digest}:",
            "Cache-Control": "no-store",
            "X-Kiban-Release-Id": release.id,
        },
    )


async def _stream(
    runtime: ServiceRuntime, download_id: int, path: anyio.Path, sha256: str
) -> AsyncIterator[bytes]:
    """The file in chunks; whatever happens (end, error, client gone) the log row gets the
    bytes sent, whether it completed, and whether the bytes sent hash to the manifest's."""
    context: ReleaseContext = runtime.context
    chunk = context.settings.release.chunk_bytes
    h = hashlib.sha256()
    sent = 0
    completed = False
    try:
        async with await path.open("rb") as f:
            while block := await f.read(chunk):
                h.update(block)
                sent += len(block)
                yield block
        completed = True
    finally:
        # The server cancels a stream whose client went away; the log is still written.
        with anyio.CancelScope(shield=True):
            async with runtime.transaction() as tx:
                await store.finish_download(
                    await tx.session.connection(),
                    download_id,
                    at=context.clock.now(),
                    sent=sent,
                    completed=completed,
                    sha256_ok=(h.hexdigest() == sha256) if completed else None,
                )


@router.post(
    "/v1/releases/{release_id}/revoke",
    summary="revoke a release (operators): no further downloads",
    responses={409: {"description": "failed or expired releases cannot be revoked"}},
)
async def revoke(
    release_id: str,
    runtime: Runtime,
    principal: Annotated[Principal, Depends(require_scope(ADMIN))],
    body: RevokeRequest | None = None,
) -> ReleaseView:
    context: ReleaseContext = runtime.context
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        release = await store.get_release(conn, release_id, for_update=True)
        if release is None:
            raise _not_found()
        if release.status is ReleaseStatus.REVOKED:
            return ReleaseView.of(release)  # revoking twice is the same as once
        if release.status not in REVOCABLE:
            raise ApiError(
                409, "not_revocable", f"a {release.status.value} release cannot be revoked"
            )
        now = context.clock.now()
        await store.update_release(
            conn,
            release.id,
            status=ReleaseStatus.REVOKED.value,
            reason=(body.reason if body and body.reason else "revoked by an operator"),
            ended_at=now,
            ended_by=principal.subject,
            updated_at=now,
        )
        await tx.emit(release_published(release, "revoked"))
        revoked = await store.get_release(conn, release.id)
    assert revoked is not None
    return ReleaseView.of(revoked)


@router.get("/v1/manifest-key", summary="the public key that verifies release manifests")
async def manifest_key(runtime: Runtime) -> SigningKeyView:
    context: ReleaseContext = runtime.context
    return SigningKeyView(
        algorithm=ALGORITHM, key_id=context.signer.key_id, public_key=context.signer.public_pem
    )
