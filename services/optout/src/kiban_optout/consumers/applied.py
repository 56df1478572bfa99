"""`optout-applied` from intake, linkage and anonymizer: one stored acknowledgement each.

The status is computed from the stored acknowledgements when it is read (`domain.status`), so
their order of arrival does not matter and a second delivery (same event id: skipped by the
runner; another event id: a second row that the aggregation does not double-count for intake
and linkage) changes nothing. An acknowledgement for an id this service does not know is kept
too: it costs a row and can never make an unknown request look applied.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from kiban_common.bus import Handler
from kiban_common.events import (
    ANONYMIZER_OPTOUT_APPLIED,
    INTAKE_OPTOUT_APPLIED,
    LINKAGE_OPTOUT_APPLIED,
    Event,
    OptoutAppliedV1,
)
from kiban_common.outbox import Transaction
from kiban_optout.store import queries

log = logging.getLogger("kiban.optout")

_SERVICE_OF = {
    INTAKE_OPTOUT_APPLIED: "intake",
    LINKAGE_OPTOUT_APPLIED: "linkage",
    ANONYMIZER_OPTOUT_APPLIED: "anonymizer",
}


async def on_applied(event: Event[Any], tx: Transaction) -> None:
    data: OptoutAppliedV1 = event.data
    service = _SERVICE_OF[event.type]  # the topic says who acknowledged, not the payload
    if data.service != service:
        log.warning("%s carries service %r; counted for %s", event.type, data.service, service)
    conn = await tx.session.connection()
    await queries.add_ack(
        conn,
        event_id=event.id,
        dispatch_id=data.optout_id,
        service=service,
        applied_at=data.applied_at,
        matched=data.matched,
        purged=dict(data.purged),
        at=datetime.now(UTC),
    )
    tx.audit(
        "optout.acknowledged",
        refs=[data.optout_id],
        purpose=data.optout_id,
        principal=f"service:{service}",
        route=event.type,
    )


handlers: dict[str, dict[str, Handler]] = {
    "": {event_type: on_applied for event_type in _SERVICE_OF},
}
