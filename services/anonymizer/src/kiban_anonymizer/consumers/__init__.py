"""Event handlers of the anonymizer service, by consumer group suffix and event type.

- `record-linked` → the research store (merges followed, purged persons dropped);
- `person-purged` → every row of the person deleted in the event's transaction, the pseudonym
  remembered, `optout-applied` published with the counts (convention 3);
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
        await research.store_record(tx.session, event.data, context.clock())

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

    return {
        "": {
            RECORD_LINKED: on_record_linked,
            PERSON_PURGED: on_person_purged,
            DATASET_REQUESTED: on_dataset_requested,
        }
    }
