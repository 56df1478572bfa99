"""Builds the linkage service: its definition, settings and FastAPI app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.crypto import BlindIndex
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_linkage.api import routers
from kiban_linkage.consumers import handlers
from kiban_linkage.context import Linkage, NormalizedCache
from kiban_linkage.domain.matching import MatchModel
from kiban_linkage.refit import refit_loop
from kiban_linkage.replica import keep_up, load_index
from kiban_linkage.settings import LinkageSettings
from kiban_linkage.store.encrypted import ENCRYPTED_COLUMNS
from kiban_linkage.store.tables import metadata


def build_context(runtime: Any) -> Linkage:
    settings: LinkageSettings = runtime.settings
    options = settings.linkage
    crypto = runtime.crypto
    pseudonym_index = (
        BlindIndex.from_b64(options.pseudonym_key.get_secret_value())
        if options.pseudonym_key is not None
        else crypto.index
    )
    return Linkage(
        options=options,
        cipher=crypto.cipher,
        index=crypto.index,
        pseudonym_index=pseudonym_index,
        model=MatchModel.default(),
        cache=NormalizedCache(options.cache_size),
        unseal=lambda token, context: crypto.unseal(token, context=context),
        gc_freeze=settings.gc_freeze,
    )


async def load_index_once(runtime: Any) -> None:
    """At start: the match index built from the vault, then `gc.freeze()`; then kept in step
    with the vault while the replica is idle (see `replica`)."""
    context: Linkage = runtime.context
    if not context.replica.loaded.is_set():
        await load_index(runtime)
    await keep_up(runtime)


def index_readiness(runtime: Any) -> str:
    """Not ready while the match index loads: records would wait for it (70–90 s at 1M)."""
    replica = runtime.context.replica
    if replica.loaded.is_set():
        return "ok"
    return f"loading ({len(replica.index):,} vault records so far)"


DEFINITION = ServiceDefinition(
    name="linkage",
    zone=Zone.CORE,
    metadata=metadata,
    migrations="kiban_linkage.store:migrations",
    title="Kiban linkage",
    routers=routers,
    consumers=handlers,
    context=build_context,
    background={"index-load": load_index_once, "model-refit": refit_loop},
    encrypted_columns=ENCRYPTED_COLUMNS,
    readiness={"index": index_readiness},
)


def create_app(
    settings: LinkageSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(LinkageSettings), broker=broker)
