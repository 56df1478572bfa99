"""The one runner every consumer goes through: effect and event id commit together, offsets after.

For each batch the runner
1. decodes every message; one that is not a Kiban event of a subscribed type is poison and goes
   to the dead-letter topic at once;
2. applies the rest in ONE database transaction, skipping event ids the group already processed
   and recording the new ones in the same transaction as the handlers' effects;
3. if any handler fails, rolls the batch back and applies the events one by one, retrying each
   with exponential backoff; an event that still fails after `max_attempts` goes to the
   dead-letter topic `dlq.<group>` and the runner moves on;
4. commits the offsets only after the database commit (and the dead-letter send); that commit
   overlaps the fetch and processing of the next batch, one at a time, in order.

A crash anywhere before step 4 redelivers the batch; step 2's event ids make that harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import DateTime, Insert, String, Table, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from kiban_common.bus._transport import BrokerUnavailable, Consumer, Received, Transport
from kiban_common.events import Event, EventRegistry, MalformedEvent, WireMessage, decode, read_type
from kiban_common.outbox import Transaction
from kiban_common.telemetry import consume_span

log = logging.getLogger("kiban.consumer")

Handler = Callable[[Event[Any], Transaction], Awaitable[None]]
Transactions = Callable[[], AbstractAsyncContextManager[Transaction]]


# Both dialects have INSERT ... ON CONFLICT DO NOTHING ... RETURNING (SQLite since 3.35).
_INSERTS: dict[str, Callable[[Table], Any]] = {
    "postgresql": postgresql_insert,
    "sqlite": sqlite_insert,
}


def _unnest_claim(table: Table) -> Insert:
    """`_claim` on PostgreSQL: the batch's ids as two arrays, unnested into rows."""
    batch = (
        func.unnest(
            bindparam("ids", type_=ARRAY(String())), bindparam("types", type_=ARRAY(String()))
        )
        .table_valued("id", "type")
        .render_derived(name="e")
    )
    rows = select(
        bindparam("group", type_=String()),
        batch.c.id,
        batch.c.type,
        bindparam("at", type_=DateTime(timezone=True)),
    )
    return (
        postgresql_insert(table)
        .from_select(["consumer_group", "event_id", "type", "processed_at"], rows)
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    )


class _Stopping(Exception):
    """Shutdown was asked while waiting for the database; abandon the batch uncommitted."""


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, (OperationalError, InterfaceError, OSError, TimeoutError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    )


def dead_letter_topic(group: str) -> str:
    return f"dlq.{group}"


@dataclass
class RunnerStats:
    processed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    batches: int = 0
    # By event type, for `/metrics`: handled counts committed events only; a type the group
    # does not subscribe to is counted as "unexpected" (the raw value is not a label).
    handled_by_type: Counter[str] = field(default_factory=Counter)
    retries_by_type: Counter[str] = field(default_factory=Counter)
    dead_lettered_by_type: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _Decoded:
    received: Received
    event: Event[Any]


class ConsumerRunner:
    def __init__(
        self,
        *,
        group: str,
        handlers: Mapping[str, Handler],
        transport: Transport,
        registry: EventRegistry,
        transactions: Transactions,
        processed: Table,
        tracer_provider: trace.TracerProvider | None = None,
        max_attempts: int = 5,
        backoff_initial: float = 0.1,
        backoff_max: float = 10.0,
        batch_size: int = 500,
        poll_timeout_ms: int = 200,
    ) -> None:
        self.group = group
        self.handlers = dict(handlers)
        self.stats = RunnerStats()
        self._transport = transport
        self._registry = registry
        self._transactions = transactions
        self._processed = processed
        self._tracer_provider = tracer_provider or trace.get_tracer_provider()
        self._max_attempts = max_attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._batch_size = batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._stopping = asyncio.Event()
        self._consumer: Consumer | None = None
        self._claim_postgresql: Insert | None = None
        self.started = asyncio.Event()

    @property
    def topics(self) -> list[str]:
        return sorted(self.handlers)

    def stop(self) -> None:
        """Finish the batch in hand, commit it, then leave the group."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = await self._transport.consumer(self.group, self.topics)
        self._consumer = consumer
        self.started.set()
        # The offset commit of a batch runs while the runner fetches and applies the next one
        # (it is started only after the batch's database commit, and at most one is in flight,
        # so offsets are committed in order); it is awaited before the next commit, on the
        # next idle poll and before leaving the group.
        committing: asyncio.Task[None] | None = None
        try:
            while not self._stopping.is_set():
                try:
                    batch = await consumer.getmany(
                        timeout_ms=self._poll_timeout_ms, max_records=self._batch_size
                    )
                except BrokerUnavailable:
                    await self._pause(1.0)
                    continue
                if committing is not None and committing.done():
                    finished = committing
                    committing = None
                    await finished  # surfaces a failure other than the broker's
                if batch:
                    try:
                        await self.process(batch)
                    except _Stopping:
                        break  # uncommitted: the batch is redelivered after restart
                    if committing is not None:
                        await committing
                    committing = asyncio.create_task(self._commit(consumer, batch))
        finally:
            try:
                if committing is not None:
                    await committing
            finally:
                self._consumer = None
                await consumer.stop()

    async def _commit(self, consumer: Consumer, batch: Sequence[Received]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for r in batch:
            offsets[(r.topic, r.partition)] = max(
                offsets.get((r.topic, r.partition), 0), r.offset + 1
            )
        try:
            await consumer.commit(offsets)
        except BrokerUnavailable:
            # The effects are stored; the batch will be redelivered and skipped by event id.
            log.warning("offset commit failed for group %s; batch will be redelivered", self.group)

    async def process(self, batch: Sequence[Received]) -> None:
        """Apply one batch (steps 1–3 above); offsets are the caller's business."""
        self.stats.batches += 1
        decoded: list[_Decoded] = []
        for received in batch:
            event = await self._decode_or_dead_letter(received)
            if event is not None:
                decoded.append(_Decoded(received, event))
        if not decoded:
            return
        try:
            async with self._transactions() as tx:
                fresh = await self._apply(decoded, tx)
        except Exception:
            for item in decoded:
                await self._apply_alone(item)
        else:
            self.stats.handled_by_type.update(item.event.type for item in fresh)

    async def _decode_or_dead_letter(self, received: Received) -> Event[Any] | None:
        event_type = read_type(received.message) or ""
        if event_type not in self.handlers or event_type not in self._registry:
            await self._dead_letter(received, reason="unexpected_type", attempts=0)
            return None
        try:
            return decode(received.message, self._registry.get(event_type).data_model)
        except MalformedEvent:
            await self._dead_letter(received, reason="malformed", attempts=0)
            return None

    async def _apply(self, items: Sequence[_Decoded], tx: Transaction) -> list[_Decoded]:
        claimed = await self._claim(items, tx)
        fresh = [item for item in items if claimed.pop(item.event.id, False)]
        self.stats.duplicates += len(items) - len(fresh)
        for item in fresh:
            with consume_span(
                self._tracer_provider,
                event_type=item.event.type,
                event_id=item.event.id,
                group=self.group,
                traceparent=item.event.traceparent,
            ):
                await self.handlers[item.event.type](item.event, tx)
        self.stats.processed += len(fresh)
        return fresh

    async def _claim(self, items: Sequence[_Decoded], tx: Transaction) -> dict[str, bool]:
        """Record the batch's event ids as processed, in the effect's transaction, and return
        the ids that were not recorded before (`INSERT ... ON CONFLICT DO NOTHING RETURNING`).

        One round trip through the primary key. A second consumer of the group racing on the
        same event (a rebalance) waits on the row lock and then finds it taken, so it skips
        the event instead of applying it twice.
        """
        now = datetime.now(UTC)
        types = {i.event.id: i.event.type for i in items}  # one row per id, even if repeated
        connection = await tx.session.connection()
        if connection.dialect.name == "postgresql":
            # The ids travel as two arrays: one statement and no per-row parameter handling.
            if self._claim_postgresql is None:
                self._claim_postgresql = _unnest_claim(self._processed)
            result = await connection.execute(
                self._claim_postgresql,
                {
                    "group": self.group,
                    "at": now,
                    "ids": list(types),
                    "types": list(types.values()),
                },
            )
            return dict.fromkeys(result.scalars(), True)
        statement = (
            _INSERTS[connection.dialect.name](self._processed)
            .on_conflict_do_nothing()
            .returning(self._processed.c.event_id)
        )
        rows = [
            {"consumer_group": self.group, "event_id": i, "type": t, "processed_at": now}
            for i, t in types.items()
        ]
        result = await connection.execute(statement, rows)
        return dict.fromkeys(result.scalars(), True)

    async def _apply_alone(self, item: _Decoded) -> None:
        delay = self._backoff_initial
        attempt = 0
        while attempt < self._max_attempts:
            attempt += 1
            try:
                async with self._transactions() as tx:
                    fresh = await self._apply([item], tx)
                self.stats.handled_by_type.update(i.event.type for i in fresh)
                return
            except Exception as exc:
                if _is_transient(exc):
                    # The database (not the event) is the problem: wait for it without
                    # spending the event's attempts, so an outage dead-letters nothing.
                    attempt -= 1
                    if self._stopping.is_set():
                        raise _Stopping from exc
                    log.warning(
                        "group %s: database unavailable (%s); waiting",
                        self.group,
                        type(exc).__name__,
                    )
                    await self._pause(min(delay, self._backoff_max))
                    delay = min(delay * 2, self._backoff_max)
                    continue
                # Only the exception's type: its message may quote the data being handled.
                log.warning(
                    "group %s: %s failed on attempt %d/%d (%s)",
                    self.group,
                    item.event.type,
                    attempt,
                    self._max_attempts,
                    type(exc).__name__,
                )
                if attempt == self._max_attempts:
                    await self._dead_letter(
                        item.received, reason=type(exc).__name__, attempts=attempt
                    )
                    return
                self.stats.retries += 1
                self.stats.retries_by_type[item.event.type] += 1
                await self._pause(delay)
                delay = min(delay * 2, self._backoff_max)

    async def _dead_letter(self, received: Received, *, reason: str, attempts: int) -> None:
        original = received.message
        headers = (
            *original.headers,
            ("dlq_group", self.group.encode()),
            ("dlq_reason", reason.encode()),
            ("dlq_attempts", str(attempts).encode()),
            ("dlq_topic", received.topic.encode()),
            ("dlq_partition", str(received.partition).encode()),
            ("dlq_offset", str(received.offset).encode()),
        )
        topic = dead_letter_topic(self.group)
        message = WireMessage(topic=topic, key=original.key, value=original.value, headers=headers)
        await self._transport.ensure_topics([topic])
        while True:  # losing a dead letter would lose the event: wait for the broker
            try:
                await self._transport.send([message])
                break
            except BrokerUnavailable:
                await self._pause(1.0)
        self.stats.dead_lettered += 1
        event_type = read_type(original) or ""
        self.stats.dead_lettered_by_type[
            event_type if event_type in self.handlers else "unexpected"
        ] += 1
        log.error(
            "group %s: message at %s/%d@%d dead-lettered (%s)",
            self.group,
            received.topic,
            received.partition,
            received.offset,
            reason,
        )

    async def _pause(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
