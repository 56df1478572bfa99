"""Taking a request: one transaction that stores it (encrypted) and queues its event.

A request whose subject and scope an earlier request already covers changes nothing and gives
the earlier id back (the caller is remembered as a requester, so they may read it). A
`stop_and_delete` after a `stop` of the same subject and scope upgrades that request in place:
same optout id, and a new `optout-requested` with its own wire id, so the core services delete
and their acknowledgements of the upgrade are told apart from those of the earlier stop.

Concurrent requests are taken together (group commit): one transaction locks the requests about
all their subjects, decides each request in arrival order against what the earlier ones of the
batch left, and writes them with one statement per table. A batch's round trips to the database
are what one request alone used to cost, and on two cores those round trips were most of a
request's CPU. A batch that fails is taken again request by request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError, OperationalError

from kiban_common.events import OPTOUT_REQUESTED, Event, OptoutRequestedV1
from kiban_common.group_commit import GroupCommit
from kiban_common.outbox import Transaction
from kiban_common.service import ServiceRuntime
from kiban_optout.context import SUBJECT_COLUMN, OptoutContext
from kiban_optout.domain.request import Accepted, covers
from kiban_optout.domain.status import aggregate
from kiban_optout.domain.subject import Subject
from kiban_optout.store import queries
from kiban_optout.store.queries import RequestRow

SOURCE = "/kiban/optout"
ROUTE = "/v1/optouts"
SEAL_CONTEXT = f"{OPTOUT_REQUESTED}/subject"
# A concurrent identical request can win the unique key (then the next attempt finds it), and
# on SQLite a transaction that read before writing is refused if another writer committed in
# between: both are retried.
_ATTEMPTS = 5


@dataclass(frozen=True)
class Taken:
    optout_id: str
    status: Literal["received", "applying", "applied"]
    received_at: datetime
    action: Literal["stop", "stop_and_delete"]
    scope: Literal["all", "institution"]
    outcome: Literal["created", "duplicate", "upgraded"]


@dataclass(frozen=True)
class _Ask:
    accepted: Accepted
    principal: str
    subject_index: str
    request_key: str


async def take(runtime: ServiceRuntime, accepted: Accepted, principal: str) -> Taken:
    ctx: OptoutContext = runtime.context
    if ctx.taker is None:
        ctx.taker = Taker(runtime)
    taker: Taker = ctx.taker
    return await taker.take(accepted, principal)


class Taker:
    """The group commit of one running service's requests."""

    def __init__(self, runtime: ServiceRuntime, *, max_batch: int = 100) -> None:
        self._runtime = runtime
        self._group: GroupCommit[_Ask, Taken] = GroupCommit(
            self._take_batch, alone=self._take_alone, max_batch=max_batch
        )

    async def take(self, accepted: Accepted, principal: str) -> Taken:
        ctx: OptoutContext = self._runtime.context
        ask = _Ask(
            accepted=accepted,
            principal=principal,
            subject_index=ctx.subject_index(accepted.subject),
            request_key=ctx.request_key(
                accepted.subject, accepted.scope, accepted.institution_code
            ),
        )
        return await self._group.submit(ask)

    @property
    def batches(self) -> int:
        return self._group.batches

    async def _take_batch(self, asks: Sequence[_Ask]) -> list[Taken]:
        async with self._runtime.transaction() as tx:
            return await _take_all(tx, self._runtime.context, asks)

    async def _take_alone(self, ask: _Ask) -> Taken:
        for attempt in range(_ATTEMPTS):
            try:
                return (await self._take_batch([ask]))[0]
            except (IntegrityError, OperationalError):
                if attempt == _ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")


@dataclass
class _Writes:
    """What a batch stores, one statement per table at the end."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    upgrades: list[dict[str, Any]] = field(default_factory=list)
    dispatches: list[dict[str, Any]] = field(default_factory=list)
    requesters: list[dict[str, Any]] = field(default_factory=list)

    async def store(self, conn: Any) -> None:
        await queries.insert_requests(conn, self.requests)
        for upgrade in self.upgrades:  # rare: a stop_and_delete after a stop
            await queries.upgrade(conn, **upgrade)
        await queries.add_dispatches(conn, self.dispatches)
        await queries.add_requesters(conn, self.requesters)


async def _take_all(tx: Transaction, ctx: OptoutContext, asks: Sequence[_Ask]) -> list[Taken]:
    conn = await tx.session.connection()
    now = ctx.now()
    about = await queries.by_subjects(conn, {ask.subject_index for ask in asks}, lock=True)
    writes = _Writes()
    taken = [await _take_one(tx, ctx, ask, about[ask.subject_index], writes, now) for ask in asks]
    await writes.store(conn)
    duplicates = [t.optout_id for t in taken if t.outcome == "duplicate"]
    if not duplicates:
        return taken
    # A duplicate reports the status of the request it repeats, read once for the batch.
    dispatch_of = {r.optout_id: r.dispatch_id for rows in about.values() for r in rows}
    acks = await queries.acks_for(conn, sorted({dispatch_of[o] for o in duplicates}))
    return [
        dataclasses.replace(t, status=aggregate(acks[dispatch_of[t.optout_id]]).status)
        if t.outcome == "duplicate"
        else t
        for t in taken
    ]


async def _take_one(
    tx: Transaction,
    ctx: OptoutContext,
    ask: _Ask,
    existing: list[RequestRow],
    writes: _Writes,
    now: datetime,
) -> Taken:
    """Decide one request against the requests about its subject (those stored and those the
    batch took before it, which `existing` is updated with) and queue its writes."""
    accepted = ask.accepted
    requester = {
        "principal": ask.principal,
        "requester": accepted.requester,
        "requested_at": now,
    }
    for row in existing:
        if covers(row.action, row.scope, row.institution_code, accepted):
            writes.requesters.append({"optout_id": row.optout_id, **requester})
            _audit(tx, "optout.request.duplicate", row.optout_id, ask.principal)
            return Taken(
                optout_id=row.optout_id,
                status="received",  # replaced by the stored acknowledgements' status
                received_at=row.received_at,
                action=_action(row.action),
                scope=_scope(row.scope),
                outcome="duplicate",
            )
    same_scope = [
        i
        for i, r in enumerate(existing)
        if r.scope == accepted.scope and r.institution_code == accepted.institution_code
    ]
    if same_scope:  # covered nothing, so it is a weaker action: upgrade it
        row = existing[same_scope[0]]
        earlier = Subject.from_dict(
            ctx.crypto.cipher.decrypt_json(row.subject, context=SUBJECT_COLUMN)
        )
        subject = accepted.subject.with_hints(earlier)
        dispatch_id = str(uuid.uuid4())
        data = subject.as_dict()
        stored_subject = _encrypt(ctx, data)
        writes.upgrades.append(
            {
                "optout_id": row.optout_id,
                "action": accepted.action,
                "subject": stored_subject,
                "dispatch_id": dispatch_id,
                "at": now,
            }
        )
        existing[same_scope[0]] = dataclasses.replace(
            row,
            action=accepted.action,
            subject=stored_subject,
            dispatch_id=dispatch_id,
            updated_at=now,
        )
        await _dispatch(tx, ctx, accepted, data, row.optout_id, dispatch_id, now, writes)
        writes.requesters.append({"optout_id": row.optout_id, **requester})
        _audit(tx, "optout.request.upgraded", row.optout_id, ask.principal)
        return Taken(
            optout_id=row.optout_id,
            status="received",
            received_at=row.received_at,
            action=accepted.action,
            scope=accepted.scope,
            outcome="upgraded",
        )
    optout_id = str(uuid.uuid4())
    data = accepted.subject.as_dict()
    stored = RequestRow(
        optout_id=optout_id,
        subject=_encrypt(ctx, data),
        action=accepted.action,
        scope=accepted.scope,
        institution_code=accepted.institution_code,
        requester=accepted.requester,
        dispatch_id=optout_id,
        received_at=now,
        updated_at=now,
    )
    writes.requests.append(
        {
            **{f.name: getattr(stored, f.name) for f in dataclasses.fields(stored)},
            "request_key": ask.request_key,
            "subject_index": ask.subject_index,
        }
    )
    existing.append(stored)
    await _dispatch(tx, ctx, accepted, data, optout_id, optout_id, now, writes)
    writes.requesters.append({"optout_id": optout_id, **requester})
    _audit(tx, "optout.request.created", optout_id, ask.principal)
    return Taken(
        optout_id=optout_id,
        status="received",
        received_at=now,
        action=accepted.action,
        scope=accepted.scope,
        outcome="created",
    )


async def _dispatch(
    tx: Transaction,
    ctx: OptoutContext,
    accepted: Accepted,
    subject: dict[str, Any],
    optout_id: str,
    dispatch_id: str,
    now: datetime,
    writes: _Writes,
) -> None:
    """Record the wire id and queue `optout-requested` (convention 2) in this transaction."""
    writes.dispatches.append(
        {
            "dispatch_id": dispatch_id,
            "optout_id": optout_id,
            "action": accepted.action,
            "dispatched_at": now,
        }
    )
    sealed = ctx.crypto.seal(
        json.dumps(subject, ensure_ascii=False).encode(), context=SEAL_CONTEXT
    )
    await tx.emit(
        Event(
            type=OPTOUT_REQUESTED,
            source=SOURCE,
            key=dispatch_id,
            data=OptoutRequestedV1(
                optout_id=dispatch_id,
                action=accepted.action,
                scope=accepted.scope,
                institution_code=accepted.institution_code,
                requester=accepted.requester,
                requested_at=now,
                subject=sealed,
            ),
        )
    )


def _audit(tx: Transaction, action: str, optout_id: str, principal: str) -> None:
    """A data-operation entry in the hash-chained audit log, committed with the change."""
    tx.audit(action, refs=[optout_id], purpose=optout_id, principal=principal, route=ROUTE)


def _encrypt(ctx: OptoutContext, subject: dict[str, Any]) -> str:
    """The subject (`Subject.as_dict()`, made once per request) for its column."""
    return ctx.crypto.cipher.encrypt_json(subject, context=SUBJECT_COLUMN)


def _action(value: str) -> Literal["stop", "stop_and_delete"]:
    return "stop_and_delete" if value == "stop_and_delete" else "stop"


def _scope(value: str) -> Literal["all", "institution"]:
    return "institution" if value == "institution" else "all"
