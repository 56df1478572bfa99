"""Request and response bodies of the release API (contract fields first, then extensions)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from kiban_release.domain.release import Release


class FileView(BaseModel):
    name: str
    rows: int
    sha256: str
    bytes: int = Field(description="extension: size of the file")
    downloads_remaining: int | None = Field(
        default=None, description="extension: downloads the caller has left (recipient only)"
    )


class PrivacyView(BaseModel):
    k: int | None = None
    achieved_k: int | None = None
    suppressed: int = 0
    l: int | None = None  # noqa: E741
    achieved_l: int | None = None


class ReleaseView(BaseModel):
    release_id: str
    application_id: str
    status: str
    kind: str
    files: list[FileView]
    privacy: PrivacyView | None
    expires_at: datetime | None
    # extensions
    recipient: str | None = None
    created_at: datetime
    ready_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = None
    build_id: str | None = None
    manifest: dict[str, Any] | None = Field(
        default=None, description="the signed manifest envelope (see GET .../manifest)"
    )
    fee: dict[str, Any] | None = Field(default=None, description="the fee statement")

    @classmethod
    def of(cls, release: Release, *, remaining: dict[str, int] | None = None) -> ReleaseView:
        privacy = None
        if release.privacy is not None:
            p = release.privacy
            privacy = PrivacyView(
                k=p.get("k"),
                achieved_k=p.get("achieved_k"),
                suppressed=p.get("suppressed") or 0,
                l=p.get("l"),
                achieved_l=p.get("achieved_l"),
            )
        return cls(
            release_id=release.id,
            application_id=release.application_id,
            status=release.status.value,
            kind=release.kind,
            files=[
                FileView(
                    name=f.name,
                    rows=f.rows,
                    sha256=f.sha256,
                    bytes=f.bytes,
                    downloads_remaining=remaining.get(f.name) if remaining is not None else None,
                )
                for f in release.files
            ],
            privacy=privacy,
            expires_at=release.expires_at,
            recipient=release.applicant,
            created_at=release.created_at,
            ready_at=release.ready_at,
            ended_at=release.ended_at,
            reason=release.reason,
            build_id=release.build_id,
            manifest=release.manifest,
            fee=release.fee,
        )


class ReleasePage(BaseModel):
    items: list[ReleaseView]
    limit: int
    offset: int
    next_offset: int | None = Field(description="offset of the next page; null on the last")


class RevokeRequest(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class DownloadView(BaseModel):
    id: int
    file_name: str
    principal: str
    source: str | None
    started_at: datetime
    finished_at: datetime | None
    bytes: int
    completed: bool
    sha256_ok: bool | None


class SigningKeyView(BaseModel):
    algorithm: str
    key_id: str
    public_key: str
