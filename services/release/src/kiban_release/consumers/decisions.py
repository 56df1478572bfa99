"""`kiban.review.application-decided.v1` → a release (`building`) and a dataset request.

One release per decision event: the release id is derived from the event id and the event id
is unique in `releases`, so a redelivered decision (even past the runner's inbox) changes
nothing. Decisions other than `approved` are not releases.
"""

from __future__ import annotations

import logging
import uuid

from kiban_common.events import ApplicationDecidedV1, Event
from kiban_common.outbox import Transaction
from kiban_release.context import ReleaseContext
from kiban_release.domain.release import ReleaseStatus
from kiban_release.events import dataset_requested
from kiban_release.store import releases as store

log = logging.getLogger("kiban.release")

# Release ids are uuid5(this, decision event id): the same decision always names the same release.
_NAMESPACE = uuid.UUID("6f1c1e0a-3c5e-5b8e-9f57-6b1a8f0e4d21")


def release_id_for(decision_event_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, decision_event_id))


async def apply_decision(
    context: ReleaseContext, event: Event[ApplicationDecidedV1], tx: Transaction
) -> None:
    data = event.data
    if data.decision != "approved":
        return
    conn = await tx.session.connection()
    if await store.release_for_decision(conn, event.id) is not None:
        return
    release_id = release_id_for(event.id)
    now = context.clock.now()
    status, reason = ReleaseStatus.BUILDING, None
    if not data.applicant:
        # Nobody could ever download it (only the applicant may): don't build a dataset.
        status, reason = ReleaseStatus.FAILED, "the decision names no applicant to deliver to"
    await store.insert_release(
        conn,
        {
            "id": release_id,
            "decision_event_id": event.id,
            "application_id": data.application_id,
            "applicant": data.applicant,
            "organization": data.organization,
            "kind": data.dataset.kind,
            "dataset": data.dataset.model_dump(mode="json"),
            "status": status.value,
            "reason": reason,
            "created_at": now,
            "updated_at": now,
        },
    )
    if status is ReleaseStatus.BUILDING:
        await tx.emit(dataset_requested(release_id, data.application_id, data.dataset, now))
        log.info("release %s: building for application %s", release_id, data.application_id)
    else:
        log.warning("release %s: failed (no applicant in the decision)", release_id)
