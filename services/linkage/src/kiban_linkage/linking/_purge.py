"""Putting an opt-out in force for a person: blocked, and for `stop_and_delete` their vault
records deleted."""

from __future__ import annotations

from typing import Any, Literal, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import (
    PERSON_PURGED,
    Event,
    PersonPurgedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import (
    Linkage,
)
from kiban_linkage.domain.linked import SOURCE
from kiban_linkage.replica import hold
from kiban_linkage.store import vault

Action = Literal["stop", "stop_and_delete"]


async def apply_block(
    ctx: Linkage,
    tx: Transaction,
    conn: AsyncConnection,
    person_key: str,
    *,
    optout_id: str,
    action: str,
    institution_code: str | None,
    notify: bool,
) -> int:
    """Block a person (for one institution or all); for `stop_and_delete` delete their vault
    records in that scope. Emits `person-purged` when `notify`. Returns the records deleted."""
    await vault.block_person(
        conn,
        person_key,
        institution_code=institution_code,
        optout_id=optout_id,
        action=action,
        at=ctx.clock(),
    )
    deleted = 0
    if action == "stop_and_delete":
        rows = await vault.delete_person_records(
            conn, person_key, institution_code=institution_code
        )
        ctx.cache.discard(token for _, token in rows)
        # out of the index (and its vocabularies) once this transaction has committed
        await (await hold(ctx, tx)).deleted(conn, [record_id for record_id, _ in rows])
        deleted = len(rows)
    if notify:
        pseudonym = ctx.pseudonym(person_key)
        extra: dict[str, Any] = {}
        if institution_code is not None:
            extra["institution_code"] = institution_code  # extension: a scoped opt-out
        await tx.emit(
            Event(
                type=PERSON_PURGED,
                source=SOURCE,
                key=pseudonym,
                data=PersonPurgedV1(
                    person=pseudonym, optout_id=optout_id, action=cast(Action, action), **extra
                ),
            )
        )
    return deleted
