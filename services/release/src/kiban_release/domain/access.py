"""Whether the recipient of a release may download one of its files now.

Ownership is checked before this (a caller who is not the recipient gets 404, never a reason),
so these refusals only ever reach the recipient.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kiban_release.domain.release import ReleaseStatus


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def download_refusal(
    *,
    status: ReleaseStatus,
    expires_at: datetime | None,
    now: datetime,
    used: int,
    limit: int,
) -> Refusal | None:
    """None when the download may start; otherwise why not (a stable code)."""
    if status is ReleaseStatus.BUILDING:
        return Refusal("not_ready", "the release is still being built")
    if status is ReleaseStatus.FAILED:
        return Refusal("release_failed", "the release failed and has no files")
    if status is ReleaseStatus.REVOKED:
        return Refusal("release_revoked", "the release was revoked")
    if status is ReleaseStatus.EXPIRED or (expires_at is not None and now >= expires_at):
        return Refusal("release_expired", "the release has expired")
    if used >= limit:
        return Refusal(
            "download_limit_reached", f"this file may be downloaded at most {limit} times"
        )
    return None
