"""A release and its life: building → ready → (revoked | expired), or building → failed.

Only `building` and `ready` releases may be revoked; a release that is `failed`, `revoked` or
`expired` never changes again, so a late `dataset-built` or a second revoke changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class ReleaseStatus(StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    REVOKED = "revoked"
    EXPIRED = "expired"


REVOCABLE = frozenset({ReleaseStatus.BUILDING, ReleaseStatus.READY})
FINAL = frozenset({ReleaseStatus.FAILED, ReleaseStatus.REVOKED, ReleaseStatus.EXPIRED})


@dataclass(frozen=True)
class ReleaseFile:
    name: str
    rows: int
    sha256: str
    bytes: int
    path: str


@dataclass(frozen=True)
class Release:
    id: str
    application_id: str
    applicant: str | None
    organization: str
    kind: str
    status: ReleaseStatus
    dataset: dict[str, Any]
    created_at: datetime
    reason: str | None = None
    build_id: str | None = None
    privacy: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    fee: dict[str, Any] | None = None
    ready_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    files: tuple[ReleaseFile, ...] = field(default=())

    def visible_to(self, subject: str, *, admin: bool) -> bool:
        """The recipient sees their release; operators (admin) see every release; anybody
        else must not learn that it exists (the API answers 404)."""
        return admin or (self.applicant is not None and subject == self.applicant)


def safe_file_name(name: str) -> bool:
    """A file name the release serves under `/files/{name}`: one path segment, no dot-files,
    no control characters."""
    return (
        0 < len(name) <= 255
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and all(c.isprintable() for c in name)
    )
