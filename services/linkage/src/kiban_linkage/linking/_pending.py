"""The records of the runner's current batch, linked together just before it commits."""

from __future__ import annotations

from kiban_common.events import (
    Event,
    RecordReceivedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import (
    Linkage,
)
from kiban_linkage.linking._link import link_records


class PendingRecords:
    """The records of the runner's current batch, linked together just before it commits.

    The runner calls handlers one event at a time inside one transaction; the first record of
    a transaction registers `flush` as the transaction's before-commit step to link the whole
    batch there. A handler of another event type calls `flush` first, so everything stays in
    arrival order. If the batch fails, the runner rolls it back and retries event by event,
    each in its own transaction, which isolates a poison event as usual.
    """

    _STATE = "kiban_linkage.pending"

    def __init__(self, ctx: Linkage, tx: Transaction) -> None:
        self.ctx = ctx
        self.tx = tx
        self.events: list[Event[RecordReceivedV1]] = []
        tx.before_commit(self.flush)

    @classmethod
    def of(cls, ctx: Linkage, tx: Transaction) -> PendingRecords:
        pending: PendingRecords | None = tx.state.get(cls._STATE)
        if pending is None:
            pending = tx.state[cls._STATE] = cls(ctx, tx)
        return pending

    @classmethod
    async def flush_of(cls, tx: Transaction) -> None:
        pending: PendingRecords | None = tx.state.get(cls._STATE)
        if pending is not None:
            await pending.flush()

    async def flush(self) -> None:
        if self.events:
            events, self.events = self.events, []
            await link_records(self.ctx, self.tx, events)
