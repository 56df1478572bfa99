"""Taking a request: one transaction that stores it (encrypted) and queues its event.

A request whose subject and scope an earlier request already covers changes nothing and gives
the earlier id back (the caller is remembered as a requester, so they may read it). A
`stop_and_delete` after a `stop` of the same subject and scope upgrades that request in place:
same optout id, and a new `optout-requested` with its own wire id, so the core services delete
and their acknowledgements of the upgrade are told apart from those of the earlier stop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy.exc import IntegrityError, OperationalError

from kiban_common.events import OPTOUT_REQUESTED, Event, OptoutRequestedV1
from kiban_common.outbox import Transaction
from kiban_common.service import ServiceRuntime
from kiban_optout.context import SUBJECT_COLUMN, OptoutContext
from kiban_optout.domain.request import Accepted, covers
from kiban_optout.domain.status import aggregate
from kiban_optout.domain.subject import Subject
from kiban_optout.store import queries

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


async def take(runtime: ServiceRuntime, accepted: Accepted, principal: str) -> Taken:
    ctx: OptoutContext = runtime.context
    subject_index = ctx.subject_index(accepted.subject)
    request_key = ctx.request_key(accepted.subject, accepted.scope, accepted.institution_code)
    for attempt in range(_ATTEMPTS):
        try:
            async with runtime.transaction() as tx:
                return await _take(tx, ctx, accepted, principal, subject_index, request_key)
        except (IntegrityError, OperationalError):
            if attempt == _ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.01 * 2**attempt)
    raise AssertionError("unreachable")


async def _take(
    tx: Transaction,
    ctx: OptoutContext,
    accepted: Accepted,
    principal: str,
    subject_index: str,
    request_key: str,
) -> Taken:
    conn = await tx.session.connection()
    now = ctx.now()
    existing = await queries.by_subject(conn, subject_index, lock=True)
    for row in existing:
        if covers(row.action, row.scope, row.institution_code, accepted):
            await queries.add_requester(
                conn,
                optout_id=row.optout_id,
                principal=principal,
                requester=accepted.requester,
                at=now,
            )
            acks = await queries.acks_for(conn, [row.dispatch_id])
            _audit(tx, "optout.request.duplicate", row.optout_id, principal)
            return Taken(
                optout_id=row.optout_id,
                status=aggregate(acks[row.dispatch_id]).status,
                received_at=row.received_at,
                action=_action(row.action),
                scope=_scope(row.scope),
                outcome="duplicate",
            )
    same_scope = [
        r
        for r in existing
        if r.scope == accepted.scope and r.institution_code == accepted.institution_code
    ]
    if same_scope:  # covered nothing, so it is a weaker action: upgrade it
        row = same_scope[0]
        earlier = Subject.from_dict(
            ctx.crypto.cipher.decrypt_json(row.subject, context=SUBJECT_COLUMN)
        )
        subject = accepted.subject.with_hints(earlier)
        dispatch_id = str(uuid.uuid4())
        await queries.upgrade(
            conn,
            row.optout_id,
            action=accepted.action,
            subject=_encrypt(ctx, subject),
            dispatch_id=dispatch_id,
            at=now,
        )
        await _dispatch(tx, ctx, accepted, subject, row.optout_id, dispatch_id, now)
        await queries.add_requester(
            conn, optout_id=row.optout_id, principal=principal, requester=accepted.requester, at=now
        )
        _audit(tx, "optout.request.upgraded", row.optout_id, principal)
        return Taken(
            optout_id=row.optout_id,
            status="received",
            received_at=row.received_at,
            action=accepted.action,
            scope=accepted.scope,
            outcome="upgraded",
        )
    optout_id = str(uuid.uuid4())
    await queries.insert_request(
        conn,
        optout_id=optout_id,
        request_key=request_key,
        subject_index=subject_index,
        subject=_encrypt(ctx, accepted.subject),
        action=accepted.action,
        scope=accepted.scope,
        institution_code=accepted.institution_code,
        requester=accepted.requester,
        at=now,
    )
    await _dispatch(tx, ctx, accepted, accepted.subject, optout_id, optout_id, now)
    await queries.add_requester(
        conn, optout_id=optout_id, principal=principal, requester=accepted.requester, at=now
    )
    _audit(tx, "optout.request.created", optout_id, principal)
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
    subject: Subject,
    optout_id: str,
    dispatch_id: str,
    now: datetime,
) -> None:
    """Record the wire id and queue `optout-requested` (convention 2) in this transaction."""
    conn = await tx.session.connection()
    await queries.add_dispatch(
        conn, dispatch_id=dispatch_id, optout_id=optout_id, action=accepted.action, at=now
    )
    sealed = ctx.crypto.seal(
        json.dumps(subject.as_dict(), ensure_ascii=False).encode(), context=SEAL_CONTEXT
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


def _encrypt(ctx: OptoutContext, subject: Subject) -> str:
    return ctx.crypto.cipher.encrypt_json(subject.as_dict(), context=SUBJECT_COLUMN)


def _action(value: str) -> Literal["stop", "stop_and_delete"]:
    return "stop_and_delete" if value == "stop_and_delete" else "stop"


def _scope(value: str) -> Literal["all", "institution"]:
    return "institution" if value == "institution" else "all"
