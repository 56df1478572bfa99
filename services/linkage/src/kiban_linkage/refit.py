"""The background refit: the match model's m/u probabilities re-estimated by EM on the vault
once it has grown enough, persisted as JSON, and put in force in every replica."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from typing import Any

from kiban_common.crypto import FieldCipher
from kiban_linkage.context import VAULT_IDENTITY, Linkage, model_from_json, model_to_json
from kiban_linkage.domain.matching import MatchModel, identity_from_mapping, normalize
from kiban_linkage.store import vault

log = logging.getLogger("kiban.linkage.refit")


def _fit(cipher: FieldCipher, tokens: list[str]) -> MatchModel:
    """CPU-bound (decrypt, normalize, EM): runs in a worker thread."""
    records = [
        normalize(identity_from_mapping(cipher.decrypt_json(t, context=VAULT_IDENTITY)))
        for t in tokens
    ]
    return MatchModel.fit(records, seed=0)


async def refit_once(runtime: Any, *, force: bool = False) -> bool:
    """Load a newer persisted model, else refit if the vault grew enough. True if refitted."""
    ctx: Linkage = runtime.context
    options = ctx.options
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        latest = await vault.latest_model(conn)
        replaced = latest is not None and latest["id"] != ctx.model_id
        if latest is not None and replaced:
            ctx.use_model(model_from_json(latest["params"]), latest["id"], latest["records"])
        total = await vault.count_records(conn)
        grown = total >= ctx.model_records * (1 + options.refit_growth)
        fit = total >= max(2, options.refit_min_records) and (grown or force)
        if fit:
            tokens = await vault.sample_identities(conn, options.refit_sample)
    if replaced:
        ctx.freeze()  # another replica's model is in force: the old one's objects may go
    if not fit:
        return False
    model = await asyncio.to_thread(_fit, ctx.cipher, tokens)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        model_id = await vault.save_model(
            conn, params=model_to_json(model), records_=total, at=ctx.clock()
        )
    ctx.use_model(model, model_id, total)
    # the fit's objects are garbage now; the new model lives on: a large rebuild
    ctx.freeze()
    log.info("match model refitted on %d of %d records", len(tokens), total)
    return True


async def refit_loop(runtime: Any) -> None:
    ctx: Linkage = runtime.context
    while not runtime.stopping.is_set():
        try:
            await refit_once(runtime)
        except Exception as exc:  # retried at the next interval; only the type is logged
            log.warning("match model refit failed (%s)", type(exc).__name__)
        with suppress(TimeoutError):
            await asyncio.wait_for(
                runtime.stopping.wait(), timeout=ctx.options.refit_interval_seconds
            )
