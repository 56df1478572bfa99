"""The events the release service publishes, built in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from kiban_common.events import (
    DATASET_REQUESTED,
    RELEASE_PUBLISHED,
    DatasetRequestedV1,
    DatasetSpec,
    Event,
    PublishedFile,
    ReleasePublishedV1,
)
from kiban_release.context import SOURCE
from kiban_release.domain.release import Release


def dataset_requested(
    release_id: str, application_id: str, dataset: DatasetSpec, at: datetime
) -> Event[DatasetRequestedV1]:
    return Event(
        type=DATASET_REQUESTED,
        source=SOURCE,
        key=release_id,
        data=DatasetRequestedV1(
            release_id=release_id, application_id=application_id, requested_at=at, dataset=dataset
        ),
    )


def release_published(
    release: Release, status: Literal["ready", "revoked", "expired"]
) -> Event[ReleasePublishedV1]:
    kind: Literal["anonymized", "pseudonymized"] = (
        "pseudonymized" if release.kind == "pseudonymized" else "anonymized"
    )
    return Event(
        type=RELEASE_PUBLISHED,
        source=SOURCE,
        key=release.id,
        subject=status,
        data=ReleasePublishedV1(
            release_id=release.id,
            application_id=release.application_id,
            kind=kind,
            status=status,
            files=[PublishedFile(name=f.name, rows=f.rows, sha256=f.sha256) for f in release.files],
            expires_at=release.expires_at,
        ),
    )
