"""Event handlers of the linkage service, by consumer group suffix and event type.

One group for both topics, so one runner applies records and opt-outs one batch after another
(the bus orders events within a topic partition, not across topics: an opt-out and a record in
the same batch may be applied in either order; both orders end with the person blocked).
Records are linked a batch at a time (`PendingRecords`): a few round trips per batch instead of
several per record.
"""

from __future__ import annotations

from typing import Any

from kiban_common.bus import Handler
from kiban_common.events import OPTOUT_REQUESTED, RECORD_RECEIVED, Event
from kiban_common.outbox import Transaction
from kiban_linkage.context import Linkage
from kiban_linkage.linking import PendingRecords
from kiban_linkage.optouts import handle_optout


def handlers(runtime: Any) -> dict[str, dict[str, Handler]]:
    ctx: Linkage = runtime.context

    async def on_record_received(event: Event[Any], tx: Transaction) -> None:
        # Linked with the rest of the batch just before the commit (see PendingRecords).
        PendingRecords.of(ctx, tx).events.append(event)

    async def on_optout_requested(event: Event[Any], tx: Transaction) -> None:
        await PendingRecords.flush_of(tx)  # records that arrived first are linked first
        await handle_optout(ctx, tx, event)

    return {"": {RECORD_RECEIVED: on_record_received, OPTOUT_REQUESTED: on_optout_requested}}
