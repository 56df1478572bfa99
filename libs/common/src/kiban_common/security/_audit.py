"""The audit log: one append-only row per HTTP request, written after the response is sent.

Rows from concurrent requests are written together (group commit): while one batch is being
committed the next requests' rows queue, and the next batch takes them all in one transaction,
so the chain's lock is taken once per batch, not once per request. Each request still waits
(after its response has gone) until its own row is committed, so the row exists when the ASGI
call returns.

A row says who (the token subject), what (method and route template), when, from where, with
which outcome and how long it took, plus the request and trace ids to join it with other
records. It never holds a request body, a query string or a header value other than the
request id: the route template is stored, not the concrete path, so identifiers in paths stay
out of it (only a request that matched no route keeps its raw path, cut to 200 characters).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    text,
    update,
)
from starlette.datastructures import Headers, MutableHeaders

from kiban_common.group_commit import GroupCommit
from kiban_common.security._chain import GENESIS, ChainReport, ChainVerifier, canonical, link
from kiban_common.security._routes import route_or_path

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_log = logging.getLogger(__name__)

AUDIT_TABLE = "kiban_audit_log"
AUDIT_ANCHORS_TABLE = "kiban_audit_anchors"
ANCHOR_EVERY = 100
# pg_advisory_xact_lock key that serializes appends to one service's chain across replicas.
_CHAIN_LOCK = 0x6B6962616E_01
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_CLIENT_CLOSED = 499  # the client went away before a response started (nginx's convention)
_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def audit_table(metadata: MetaData, name: str = AUDIT_TABLE) -> Table:
    """The audit table in a service's metadata, hash-chained (`seq`, `prev_hash`, `hash`), with
    its anchors table. Make both append-only with `append_only_ddl`.

    `kind` is `request` (one per HTTP call) or `data` (a data operation a service records:
    `action`, the ids it touched in `refs`, how many in `count`, and the application or opt-out
    it served in `purpose`). Entries hold ids only, never personal data. `seq`, `prev_hash` and
    `hash` are NULL until the chainer links the entry (`AuditLog.chain_pending`); the
    triggers of `chained_log_ddl` allow exactly that one update."""
    table = Table(
        name,
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        # Filled by the chainer after the row's own transaction commits (NULL until then).
        Column("seq", BigInteger, nullable=True, unique=True),
        Column("at", DateTime(timezone=True), nullable=False),
        Column("kind", String(16), nullable=False, server_default="request"),
        Column("principal", String(256), nullable=True),
        Column("method", String(16), nullable=False),
        Column("route", String(255), nullable=False),
        Column("status", Integer, nullable=False),
        Column("source", String(64), nullable=True),
        Column("request_id", String(64), nullable=False),
        Column("trace_id", String(32), nullable=True),
        Column("duration_ms", Float, nullable=False),
        Column("action", String(64), nullable=True),
        Column("refs", Text, nullable=True),
        Column("count", Integer, nullable=True),
        Column("purpose", String(128), nullable=True),
        Column("prev_hash", String(64), nullable=True),
        Column("hash", String(64), nullable=True),
    )
    Index(f"ix_{name}_at", table.c.at)
    Index(f"ix_{name}_principal_at", table.c.principal, table.c.at)
    Table(
        AUDIT_ANCHORS_TABLE if name == AUDIT_TABLE else f"{name}_anchors",
        metadata,
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("hash", String(64), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),
    )
    return table


class AuditLog:
    """A service's chained audit table: entries are appended unchained, then linked.

    `append` is a plain insert in the caller's transaction, so an entry commits with the change
    it records and no writer waits for another. `chain_pending` links committed, unchained
    entries in `id` order (seq, prev_hash, hash; an anchor every `anchor_every`): it runs in its
    own short transaction under a database lock — on PostgreSQL a transaction-scoped advisory
    lock (one chainer across replicas), on SQLite the write lock, taken by a write that touches
    no row — from the service's background chainer, woken after each commit that appended.
    """

    def __init__(self, table: Table, anchors: Table, *, anchor_every: int = ANCHOR_EVERY) -> None:
        self.table = table
        self.anchors = anchors
        self.anchor_every = anchor_every
        self._appended = asyncio.Event()

    async def append(self, connection: AsyncConnection, entries: list[dict[str, Any]]) -> None:
        if entries:
            await connection.execute(
                insert(self.table), [{"kind": "request", **entry} for entry in entries]
            )

    def appended(self) -> None:
        """Called after a commit that appended entries: wakes the chainer."""
        self._appended.set()

    async def chain_pending(self, connection: AsyncConnection, *, limit: int = 1000) -> int:
        """Link up to `limit` unchained entries after the last chained one; returns how many.
        Call inside a transaction of its own; the lock is held until it ends."""
        t = self.table
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
        else:
            await connection.execute(delete(self.anchors).where(false()))
        pending = (
            await connection.execute(
                select(t).where(t.c.seq.is_(None)).order_by(t.c.id).limit(limit)
            )
        ).all()
        if not pending:
            return 0
        last = (
            await connection.execute(
                select(t.c.seq, t.c.hash)
                .where(t.c.seq.is_not(None))
                .order_by(t.c.seq.desc())
                .limit(1)
            )
        ).first()
        seq, prev = (int(last.seq), str(last.hash)) if last else (0, GENESIS)
        links, anchors = [], []
        for row in pending:
            entry = dict(row._mapping)
            seq += 1
            digest = link(prev, seq, canonical(entry))
            links.append(
                {"row_id": entry["id"], "new_seq": seq, "new_prev": prev, "new_hash": digest}
            )
            if seq % self.anchor_every == 0:
                anchors.append({"seq": seq, "hash": digest, "at": entry["at"]})
            prev = digest
        await connection.execute(
            update(t)
            .where(t.c.id == bindparam("row_id"), t.c.seq.is_(None))
            .values(
                seq=bindparam("new_seq"),
                prev_hash=bindparam("new_prev"),
                hash=bindparam("new_hash"),
            ),
            links,
        )
        if anchors:
            await connection.execute(insert(self.anchors), anchors)
        return len(links)

    async def chain_all(self, sessions: async_sessionmaker[Any], *, batch: int = 1000) -> int:
        """Chain every committed, unchained entry, a batch per transaction (a batch that is not
        full was the last)."""
        total = 0
        while True:
            async with sessions() as session, session.begin():
                linked = await self.chain_pending(await session.connection(), limit=batch)
            total += linked
            if linked < batch:
                return total

    async def run_chainer(
        self,
        sessions: async_sessionmaker[Any],
        stopping: asyncio.Event,
        *,
        poll: float = 1.0,
        settle: float = 0.05,
    ) -> None:
        """The background chainer: after each wake-up (or `poll` seconds, for entries other
        processes left), chain everything pending. A wake-up waits `settle` seconds first, so
        the commits of a busy moment are chained in one pass rather than one pass each. The
        runtime makes a last pass with `chain_all` once every other task has stopped."""
        while not stopping.is_set():
            self._appended.clear()
            try:
                await self.chain_all(sessions)
            except Exception as exc:
                _log.warning("audit chaining failed (%s); retrying", type(exc).__name__)
            waiter = asyncio.ensure_future(self._appended.wait())
            stop = asyncio.ensure_future(stopping.wait())
            await asyncio.wait({waiter, stop}, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
            for future in (waiter, stop):
                future.cancel()
            if waiter.done() and not waiter.cancelled() and not stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=settle)


class AuditWriter:
    """Group commit for audit rows: `append` returns once the batch holding the row is
    committed (`GroupCommit`), so under load one commit serves many requests and an idle
    service still writes each row at once."""

    def __init__(
        self, sessions: async_sessionmaker[Any], log: AuditLog, *, max_batch: int = 500
    ) -> None:
        self.sessions = sessions
        self.log = log
        self._group: GroupCommit[dict[str, Any], None] = GroupCommit(
            self._write, max_batch=max_batch
        )

    async def append(self, row: dict[str, Any]) -> None:
        await self._group.submit(row)

    async def _write(self, rows: Sequence[dict[str, Any]]) -> list[None]:
        async with self.sessions() as session, session.begin():
            await self.log.append(await session.connection(), list(rows))
        self.log.appended()
        return [None] * len(rows)


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    principal: str | None
    method: str
    route: str
    status: int
    source: str | None
    request_id: str
    trace_id: str | None
    duration_ms: float

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class AuditMiddleware:
    """Pure ASGI middleware writing one `AuditRecord` per HTTP request.

    The row is written once the response has been handed to the server, so the client does not
    wait for it (the ASGI task does). A request that ends in an exception is recorded as 500;
    one whose client disconnected first as 499, written from a separate task so the
    cancellation cannot stop it. A failed write is never silent: it is logged as a warning with
    a running count (no row content). The principal is what `bearer_principal` left in the
    request state (`principal_subject`); the request id is the caller's `X-Request-ID` when it
    is a plain token, else a new one, and is echoed in the response.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        sessions: async_sessionmaker[Any],
        log: AuditLog,
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.writer = AuditWriter(sessions, log)
        self.exempt_paths = frozenset(exempt_paths)
        self.failed_writes = 0
        self._detached: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        at = datetime.now(UTC)
        root_path = str(scope.get("root_path", ""))
        headers = Headers(scope=scope)
        request_id = _request_id(headers.get(REQUEST_ID_HEADER))
        trace_id = _trace_id(headers.get("traceparent"))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status: int | None = None

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message.setdefault("headers", [])  # optional in ASGI
                response_headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in response_headers:
                    response_headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        def record(final_status: int) -> AuditRecord:
            client = scope.get("client")
            principal = state.get("principal_subject")
            return AuditRecord(
                at=at,
                principal=principal if isinstance(principal, str) else None,
                method=str(scope.get("method", ""))[:16],
                route=route_or_path(scope, root_path=root_path),
                status=final_status,
                source=str(client[0])[:64] if client else None,
                request_id=request_id,
                trace_id=trace_id,
                duration_ms=(time.perf_counter() - started) * 1000,
            )

        try:
            await self.app(scope, receive, send_and_watch)
        except asyncio.CancelledError:
            self._write_detached(record(status if status is not None else _CLIENT_CLOSED))
            raise
        except Exception:
            await self.write(record(500 if status is None or status < 400 else status))
            raise
        await self.write(record(status if status is not None else 500))

    async def write(self, record: AuditRecord) -> None:
        """Commit one row (batched with concurrent ones); failures are counted and logged,
        never raised into the request."""
        try:
            await self.writer.append(record.as_row())
        except Exception as exc:
            self.failed_writes += 1
            _log.warning(
                "audit row not written (%s; %d failed so far)",
                type(exc).__name__,
                self.failed_writes,
            )

    async def drain(self) -> None:
        """Wait for rows written from detached tasks (call at shutdown)."""
        while self._detached:
            await asyncio.gather(*tuple(self._detached), return_exceptions=True)

    def _write_detached(self, record: AuditRecord) -> None:
        task = asyncio.get_running_loop().create_task(self.write(record))
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)


def _request_id(supplied: str | None) -> str:
    if supplied is not None and _REQUEST_ID.fullmatch(supplied):
        return supplied
    return uuid.uuid4().hex


def _trace_id(traceparent: str | None) -> str | None:
    """The active span's trace id (tracing middleware runs outside this one), else the one in
    an incoming `traceparent`."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        return format(context.trace_id, "032x")
    if traceparent:
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match and match.group(1) != "0" * 32:
            return match.group(1)
    return None


async def verify_audit_log(
    connection: AsyncConnection, table: Table, anchors: Table, *, batch: int = 5000
) -> ChainReport:
    """Read a service's audit log in `seq` order, a page at a time, checking its chain and
    anchors as it goes (memory stays bounded by the page, not the log). Entries not chained
    yet (committed in the last moments, or left by a process that stopped before its chainer
    ran; the next start chains them) are counted in `pending`."""
    anchored = {
        int(row.seq): str(row.hash)
        for row in await connection.execute(select(anchors.c.seq, anchors.c.hash))
    }
    verifier = ChainVerifier(anchored)
    last = 0
    while True:
        page = (
            await connection.execute(
                select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
            )
        ).all()
        if not page:
            break
        for row in page:
            if (bad := verifier.feed(dict(row._mapping))) is not None:
                return bad
        last = int(page[-1].seq)
    pending = (
        await connection.execute(
            select(func.count()).select_from(table).where(table.c.seq.is_(None))
        )
    ).scalar_one()
    return dataclasses.replace(verifier.finish(), pending=int(pending))
