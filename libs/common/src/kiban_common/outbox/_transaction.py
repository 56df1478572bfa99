"""One transaction for a state change and the events it causes (the transactional outbox).

A request handler or an event handler does its work through a `Transaction`: writes go through
`tx.session`, events through `tx.emit()`. Both commit together or not at all; the relay publishes
the events only after the commit, so an event never announces a change that was rolled back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from sqlalchemy import (
    JSON,
    DateTime,
    Insert,
    LargeBinary,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from kiban_common.events import REGISTRY, Event, EventRegistry, Zone, ZoneViolation, encode
from kiban_common.events import may_publish as _may_publish
from kiban_common.security import AuditLog
from kiban_common.telemetry import current_traceparent


class Transaction:
    """The session of one unit of work and the events it will publish."""

    def __init__(
        self, session: AsyncSession, outbox: OutboxWriter, audit: AuditLog | None = None
    ) -> None:
        self.session = session
        self._outbox = outbox
        self._audit = audit
        self._pending: list[dict[str, Any]] = []
        self._audit_entries: list[dict[str, Any]] = []
        self._before_commit: list[Callable[[], Awaitable[None]]] = []
        self._emitted = 0
        # Objects a handler keeps for the rest of this unit of work (e.g. a batch it collects).
        self.state: dict[str, Any] = {}

    def before_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` once, just before the commit (after the last handler of a consumer
        batch), so a handler can do the batch's work together; it may still write and emit."""
        self._before_commit.append(callback)

    async def _run_before_commit(self) -> None:
        while self._before_commit:
            await self._before_commit.pop(0)()

    def audit(
        self,
        action: str,
        *,
        refs: Sequence[str] = (),
        count: int | None = None,
        purpose: str | None = None,
        principal: str | None = None,
        source: str | None = None,
        route: str = "-",
    ) -> None:
        """Record a data operation in the service's hash-chained audit log, committed with the
        change itself: what was done (`action`), to which ids (`refs`, ids only, never personal
        data), how many, for which application or opt-out (`purpose`), by whom, from where."""
        if self._audit is None:
            raise RuntimeError("this transaction has no audit log")
        self._audit_entries.append(
            {
                "at": datetime.now(UTC),
                "kind": "data",
                "principal": principal,
                "method": "-",
                "route": route[:255],
                "status": 0,
                "source": source,
                "request_id": uuid.uuid4().hex,
                "trace_id": None,
                "duration_ms": 0.0,
                "action": action[:64],
                "refs": json.dumps(list(refs)[:1000]) if refs else None,
                "count": count if count is not None else (len(refs) if refs else None),
                "purpose": purpose[:128] if purpose else None,
            }
        )

    async def _append_audit(self) -> bool:
        if not self._audit_entries or self._audit is None:
            return False
        entries, self._audit_entries = self._audit_entries, []
        await self._audit.append(await self.session.connection(), entries)
        return True

    async def emit(self, event: Event[Any]) -> None:
        """Queue `event` for the outbox. It is checked (registry, zone) and encoded now, so a
        bad event fails where it is emitted; it is written with the others at commit."""
        self._pending.append(self._outbox.row(event))
        self._emitted += 1

    async def flush(self) -> None:
        """Write the queued events in one statement (done for you before the commit)."""
        if self._pending:
            rows, self._pending = self._pending, []
            await self._outbox.write_rows(self.session, rows)

    @property
    def emitted(self) -> int:
        return self._emitted


class OutboxWriter:
    """Checks an event against the registry and the zone, then stores it in the outbox table."""

    def __init__(
        self,
        table: Table,
        *,
        zone: Zone,
        registry: EventRegistry = REGISTRY,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.table = table
        self.zone = zone
        self.registry = registry
        self.on_commit = on_commit
        self._unnest: Insert | None = None

    def check(self, event: Event[Any]) -> None:
        spec = self.registry.get(event.type)
        if not _may_publish(self.zone, spec.classification, spec.sealing):
            raise ZoneViolation(
                zone=self.zone,
                event_type=spec.type,
                classification=spec.classification,
                verb="publish",
            )
        if not isinstance(event.data, spec.data_model):
            raise TypeError(
                f"{event.type} carries {spec.data_model.__name__}, not {type(event.data).__name__}"
            )

    def row(self, event: Event[Any]) -> dict[str, Any]:
        """The outbox row of a checked, encoded event (with the current trace context)."""
        self.check(event)
        if event.traceparent is None:
            event = _with_trace(event)
        wire = encode(event)
        return {
            "event_id": event.id,
            "type": event.type,
            "key": wire.key,
            "value": wire.value,
            "headers": [[k, v.decode()] for k, v in wire.headers],
            "created_at": datetime.now(UTC),
        }

    async def write_rows(self, session: AsyncSession, rows: list[dict[str, Any]]) -> None:
        """Insert `rows` (from `row()`) in one statement; their ids follow the list's order."""
        connection = await session.connection()
        if connection.dialect.name == "postgresql" and len(rows) > 1:
            # The rows travel as one array per column: no per-row parameter handling.
            if self._unnest is None:
                self._unnest = _unnest_insert(self.table)
            await connection.execute(
                self._unnest,
                {
                    "event_ids": [r["event_id"] for r in rows],
                    "types": [r["type"] for r in rows],
                    "keys": [r["key"] for r in rows],
                    "values": [r["value"] for r in rows],
                    "headers": [json.dumps(r["headers"]) for r in rows],
                    "created": [r["created_at"] for r in rows],
                },
            )
            return
        await connection.execute(insert(self.table), rows)

    async def write(self, session: AsyncSession, event: Event[Any]) -> None:
        await self.write_rows(session, [self.row(event)])


def _unnest_insert(table: Table) -> Insert:
    """PostgreSQL: insert rows given as column arrays, in array order (ORDER BY the ordinality,
    so the serial ids, which are commit order for the relay, follow the order of emission)."""
    arrays = (
        ("event_ids", String()),
        ("types", String()),
        ("keys", LargeBinary()),
        ("values", LargeBinary()),
        ("headers", Text()),
        ("created", DateTime(timezone=True)),
    )
    r = (
        func.unnest(*(bindparam(name, type_=ARRAY(kind)) for name, kind in arrays))
        .table_valued(
            "event_id", "type", "key", "value", "headers", "created_at", with_ordinality="n"
        )
        .render_derived(name="r")
    )
    rows = select(
        r.c.event_id, r.c.type, r.c.key, r.c.value, cast(r.c.headers, JSON), r.c.created_at
    ).order_by(r.c.n)
    return insert(table).from_select(
        ["event_id", "type", "key", "value", "headers", "created_at"], rows
    )


def _with_trace(event: Event[Any]) -> Event[Any]:
    if not trace.get_current_span().get_span_context().is_valid:
        return event  # no active trace: nothing to carry (and the propagators are skipped)
    traceparent = current_traceparent()
    if traceparent is None:
        return event
    return Event(
        type=event.type,
        source=event.source,
        key=event.key,
        data=event.data,
        id=event.id,
        time=event.time,
        subject=event.subject,
        traceparent=traceparent,
    )


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
    outbox: OutboxWriter,
    audit: AuditLog | None = None,
) -> AsyncIterator[Transaction]:
    """Open a unit of work; commit on normal exit, roll back on an exception. Audit entries are
    inserted with the change and linked into the chain after the commit by the chainer."""
    async with sessions() as session:
        await session.begin()
        try:
            tx = Transaction(session, outbox, audit)
            yield tx
            await tx._run_before_commit()
            await tx.flush()
            audited = await tx._append_audit()
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    if tx.emitted and outbox.on_commit is not None:
        outbox.on_commit()
    if audited and audit is not None:
        audit.appended()
