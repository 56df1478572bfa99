"""Event handlers of the anonymizer service, by consumer group suffix and event type.

- `record-linked` → the research store (merges followed, purged persons dropped), a consumer
  batch at a time;
- `person-purged` (its own group, `kiban-anonymizer-optout`) → every row of the person deleted
  in the event's transaction, the pseudonym remembered, `optout-applied` published with the
  counts (convention 3);
- `dataset-requested` → a build queued; the build worker does the long work outside any
  consumer transaction.
"""

from __future__ import annotations

import uuid
from typing import Any

from kiban_anonymizer.context import AnonymizerContext
from kiban_anonymizer.store import builds, research
from kiban_common.bus import Handler
from kiban_common.events import (
    ANONYMIZER_OPTOUT_APPLIED,
    DATASET_REQUESTED,
    PERSON_PURGED,
    RECORD_LINKED,
    DatasetRequestedV1,
    Event,
    OptoutAppliedV1,
    PersonPurgedV1,
    RecordLinkedV1,
)
from kiban_common.outbox import Transaction

SOURCE = "/kiban/anonymizer"


def handlers(runtime: Any) -> dict[str, dict[str, Handler]]:
    context: AnonymizerContext = runtime.context

    async def on_record_linked(event: Event[RecordLinkedV1], tx: Transaction) -> None:
        pending: list[RecordLinkedV1] | None = tx.state.get("records")
        if pending is None:
            pending = tx.state["records"] = []
            tx.before_commit(lambda: store_pending(tx, pending))
        pending.append(event.data)

    async def store_pending(tx: Transaction, pending: list[RecordLinkedV1]) -> None:
        """The batch's records, together, just before its commit. Purges run in their own
        group, concurrently: holding the purge counter's lock from before the first write
        until the commit means a purge either commits first (and the batch sees the person as
        purged) or waits and then deletes what the batch stored; the batch's writes being few,
        the wait is short."""
        await research.lock_purge_seq(tx.session)
        await research.store_records(tx.session, pending, context.clock())

    async def on_person_purged(event: Event[PersonPurgedV1], tx: Transaction) -> None:
        data = event.data
        now = context.clock()
        counts = await research.purge_person(tx.session, data.person, data.optout_id, now)
        await tx.emit(
            Event(
                type=ANONYMIZER_OPTOUT_APPLIED,
                source=SOURCE,
                key=data.optout_id,
                data=OptoutAppliedV1(
                    optout_id=data.optout_id,
                    service="anonymizer",
                    applied_at=now,
                    matched=1,
                    purged=counts,
                ),
            )
        )

    async def on_dataset_requested(event: Event[DatasetRequestedV1], tx: Transaction) -> None:
        build_id = f"bld-{uuid.uuid4().hex}"
        if await builds.queue_build(tx.session, build_id, event.data, context.clock()):
            context.wake.set()

    # Purges have a group of their own, so a stop-and-delete is not queued behind the record
    # traffic (opt-out status is what a person waits for); see on_record_linked for the lock.
    return {
        "": {RECORD_LINKED: on_record_linked, DATASET_REQUESTED: on_dataset_requested},
        "optout": {PERSON_PURGED: on_person_purged},
    }
