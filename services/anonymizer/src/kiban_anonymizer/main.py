"""Builds the anonymizer service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_anonymizer.api import routers
from kiban_anonymizer.builder import build_loop
from kiban_anonymizer.consumers import handlers
from kiban_anonymizer.context import build_context
from kiban_anonymizer.settings import AnonymizerSettings
from kiban_anonymizer.store.tables import metadata
from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings

DEFINITION = ServiceDefinition(
    name="anonymizer",
    zone=Zone.CORE,
    metadata=metadata,
    migrations="kiban_anonymizer.store:migrations",
    title="Kiban anonymizer",
    routers=routers,
    consumers=handlers,
    context=build_context,
    background={"builds": build_loop},
)


def create_app(
    settings: AnonymizerSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(AnonymizerSettings), broker=broker)
