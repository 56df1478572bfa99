"""Opt-outs (convention 2 in, convention 3 out): match the subject to persons at the strict
threshold, apply it, or hold it for an operator when the match is ambiguous.

Applying: every matched person is blocked (for the request's institution, or all) and, for
`stop_and_delete`, their vault records in that scope are deleted; `person-purged` goes out per
person and one `kiban.linkage.optout-applied.v1` with the counts. The subject is kept as a block
entry (encrypted, blind-indexed) so records that arrive later are caught. An ambiguous match is
stored for review and NOT acknowledged until an operator resolves it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import (
    LINKAGE_OPTOUT_APPLIED,
    Event,
    OptoutAppliedV1,
    OptoutRequestedV1,
)
from kiban_common.outbox import Transaction
from kiban_linkage.context import BLOCK_SUBJECT, OPTOUT_SUBJECT, REVIEW_SUBJECT, Linkage
from kiban_linkage.domain.matching import identity_from_mapping, normalize
from kiban_linkage.domain.persons import Scored, decide_optout
from kiban_linkage.linking import SOURCE, apply_block
from kiban_linkage.replica import hold
from kiban_linkage.store import vault


class SubjectError(ValueError):
    """The sealed subject did not open to a JSON object (no content in the message)."""


async def handle_optout(ctx: Linkage, tx: Transaction, event: Event[OptoutRequestedV1]) -> str:
    """Returns "applied", "review" or "duplicate"."""
    data = event.data
    conn = await tx.session.connection()
    await hold(ctx, tx)  # the vault lock (a purge changes the vault)
    await ctx.ensure_model(conn)
    matched_before = await vault.block_entry_matched(conn, data.optout_id)
    if matched_before is not None:  # a re-published request: acknowledge again, change nothing
        await _acknowledge(ctx, tx, data.optout_id, matched_before, {})
        return "duplicate"
    if await vault.optout_review(conn, data.optout_id) is not None:
        return "duplicate"
    if ctx.unseal is None:
        raise RuntimeError("the linkage context cannot unseal opt-out subjects")
    try:
        subject = json.loads(ctx.unseal(data.subject, OPTOUT_SUBJECT))
    except ValueError:
        raise SubjectError("subject: not a JSON object") from None
    if not isinstance(subject, dict):
        raise SubjectError("subject: not a JSON object")
    institution = data.institution_code if data.scope == "institution" else None
    normalized = normalize(identity_from_mapping(subject))
    digests = ctx.digests(normalized)
    found = await vault.record_candidates(
        conn, digests, institution_code=institution, limit=ctx.options.max_candidates
    )
    model = ctx.model
    scored = [
        Scored(r.id, r.person_key, model.probability(normalized, ctx.normalized(r.identity)))
        for r in found
    ]
    patient_id = subject.get("institution_patient_id")
    if institution is not None and patient_id:
        # Within the institution's scope its own patient id is decisive.
        own = await vault.record_by_key(conn, ctx.patient_key(institution, str(patient_id)))
        if own is not None:
            await apply_optout(
                ctx, tx, conn, data, subject=subject, digests=digests, persons=[own.person_key]
            )
            return "applied"
    decision = decide_optout(
        scored,
        strict_threshold=ctx.strict_threshold,
        possible_threshold=ctx.possible_threshold,
    )
    if decision.ambiguous:
        await vault.add_optout_review(
            conn,
            optout_id=data.optout_id,
            action=data.action,
            scope=data.scope,
            institution_code=institution,
            subject=ctx.cipher.encrypt_json(subject, context=REVIEW_SUBJECT),
            candidates=[{"person": k, "probability": round(p, 6)} for k, p in decision.candidates],
            received_at=ctx.clock(),
        )
        return "review"
    await apply_optout(
        ctx, tx, conn, data, subject=subject, digests=digests, persons=list(decision.matched)
    )
    return "applied"


async def apply_optout(
    ctx: Linkage,
    tx: Transaction,
    conn: AsyncConnection,
    request: OptoutRequestedV1 | dict[str, Any],
    *,
    subject: dict[str, Any],
    digests: Sequence[str],
    persons: Sequence[str],
) -> None:
    """Put an opt-out into force for `persons` and keep its subject as a block entry."""
    r = request if isinstance(request, dict) else request.model_dump()
    institution = r["institution_code"] if r["scope"] == "institution" else None
    deleted = 0
    for person_key in dict.fromkeys(persons):
        deleted += await apply_block(
            ctx,
            tx,
            conn,
            person_key,
            optout_id=r["optout_id"],
            action=r["action"],
            institution_code=institution,
            notify=True,
        )
    token = ctx.cipher.encrypt_json(subject, context=BLOCK_SUBJECT)
    await vault.add_block_entry(
        conn,
        optout_id=r["optout_id"],
        action=r["action"],
        institution_code=institution,
        subject=token,
        digests=digests,
        matched_persons=len(set(persons)),
        at=ctx.clock(),
    )
    await _acknowledge(
        ctx,
        tx,
        r["optout_id"],
        len(set(persons)),
        {"persons": len(set(persons)), "vault_records": deleted},
    )


async def _acknowledge(
    ctx: Linkage, tx: Transaction, optout_id: str, matched: int, purged: dict[str, int]
) -> None:
    await tx.emit(
        Event(
            type=LINKAGE_OPTOUT_APPLIED,
            source=SOURCE,
            key=optout_id,
            data=OptoutAppliedV1(
                optout_id=optout_id,
                service="linkage",
                applied_at=ctx.clock(),
                matched=matched,
                purged=purged,
            ),
        )
    )


def subject_digests(ctx: Linkage, subject: dict[str, Any]) -> list[str]:
    return ctx.digests(normalize(identity_from_mapping(subject)))
