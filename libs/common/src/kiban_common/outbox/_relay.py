"""The relay: publishes committed outbox rows at least once, in commit order.

It takes a batch in `id` order under a row lock (a second relay of the same service waits, so
order holds across replicas), hands it to the bus, and commits the batch's deletion only after the
broker has acknowledged every message (PostgreSQL: one `DELETE ... RETURNING` of the locked batch,
committed after the acks; SQLite: read, publish, delete those ids). A crash before the commit
publishes the batch again; consumers de-duplicate by event id. While the broker is down the rows
stay and the relay backs off.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Table, Text, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from kiban_common.events import WireMessage

log = logging.getLogger("kiban.outbox")

Publish = Callable[[Sequence[WireMessage]], Awaitable[None]]
# The relay counts the rows still waiting only after a full batch or a failure (a drained
# outbox is 0 without a query), and only up to this many: an index range scan, never COUNT(*).
PENDING_CAP = 10_000


class OutboxRelay:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        table: Table,
        publish: Publish,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._table = table
        self._publish = publish
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._wakeup = asyncio.Event()
        self._stopping = False
        self.published = 0
        self.failures = 0
        # Read by `/metrics` at scrape time: events published per type, and the rows waiting
        # as of the last batch (capped at PENDING_CAP).
        self.published_by_type: Counter[str] = Counter()
        self.pending_rows = 0

    def wake(self) -> None:
        """Called after a commit that wrote outbox rows, so they go out without waiting a poll."""
        self._wakeup.set()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        backoff = self._poll_interval
        while not self._stopping:
            try:
                sent = await self.relay_once()
            except Exception as exc:  # the broker or the database is away: keep the rows, retry
                self.failures += 1
                log.warning(
                    "outbox relay failed (%s); retrying in %.1fs", type(exc).__name__, backoff
                )
                await self._count_pending()
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._poll_interval
            if sent < self._batch_size:
                self.pending_rows = 0  # every row committed before the read went out
                await self._sleep(self._poll_interval)
            else:
                await self._count_pending()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many events went out."""
        async with self._sessions() as session, session.begin():
            connection = await session.connection()
            if connection.dialect.name == "postgresql":
                rows = await self._take_postgresql(connection)
            else:
                rows = await self._read(connection)
            if not rows:
                return 0
            await self._publish(
                [
                    WireMessage(
                        topic=row.type,
                        key=row.key,
                        value=row.value,
                        headers=_headers(row.headers),
                    )
                    for row in rows
                ]
            )
            if connection.dialect.name != "postgresql":
                # Exactly the rows sent: ids are allotted at insert, not at commit, so a lower
                # id may commit later and must not be swept away unpublished.
                t = self._table
                await connection.execute(delete(t).where(t.c.id.in_([row.id for row in rows])))
            # Commit (the deletion) only now that the broker has acknowledged every message;
            # any failure above rolls it back and the rows stay for the next attempt.
        self.published += len(rows)
        self.published_by_type.update(row.type for row in rows)
        return len(rows)

    async def _take_postgresql(self, connection: AsyncConnection) -> Sequence[Any]:
        """Delete the oldest batch under its row locks and return it, in one round trip
        (`DELETE ... WHERE id IN (SELECT ... FOR UPDATE) RETURNING`); the deletion commits only
        after the broker's acknowledgement. A second relay waits on the locks, as with a read."""
        t = self._table
        oldest = select(t.c.id).order_by(t.c.id).limit(self._batch_size).with_for_update()
        rows = list(
            (
                await connection.execute(
                    delete(t)
                    .where(t.c.id.in_(oldest.scalar_subquery()))
                    .returning(t.c.id, t.c.type, t.c.key, t.c.value, _headers_text(t))
                )
            ).all()
        )
        rows.sort(key=lambda row: row.id)  # RETURNING promises no order; commit order is id
        return rows

    async def _read(self, connection: AsyncConnection) -> Sequence[Any]:
        """The oldest batch in `id` order, under a row lock where the database has one."""
        t = self._table
        return (
            await connection.execute(
                select(t.c.id, t.c.type, t.c.key, t.c.value, _headers_text(t))
                .order_by(t.c.id)
                .limit(self._batch_size)
                .with_for_update()
            )
        ).all()

    async def pending(self) -> int:
        async with self._sessions() as session:
            return int(
                (
                    await (await session.connection()).execute(
                        select(func.count()).select_from(self._table)
                    )
                ).scalar_one()
            )

    async def _count_pending(self) -> None:
        """Update `pending_rows` (up to PENDING_CAP); keeps the last value if the database is
        away too."""
        t = self._table
        try:
            async with self._sessions() as session:
                capped = select(t.c.id).order_by(t.c.id).limit(PENDING_CAP).subquery()
                self.pending_rows = int(
                    (
                        await (await session.connection()).execute(
                            select(func.count()).select_from(capped)
                        )
                    ).scalar_one()
                )
        except Exception as exc:
            log.debug("outbox pending rows not counted (%s)", type(exc).__name__)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)
        self._wakeup.clear()


def _headers_text(t: Table) -> Any:
    """The stored headers as their JSON text: rows of one type without trace context share the
    same text, so `_headers` parses each distinct text once instead of once per row."""
    return cast(t.c.headers, Text).label("headers")


@functools.lru_cache(maxsize=1024)
def _headers(stored: str) -> tuple[tuple[str, bytes], ...]:
    return tuple((name, value.encode()) for name, value in json.loads(stored))
