"""Builds the linkage service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_linkage.api import routers
from kiban_linkage.consumers import handlers
from kiban_linkage.settings import LinkageSettings
from kiban_linkage.store.tables import metadata

DEFINITION = ServiceDefinition(
    name="linkage",
    zone=Zone.CORE,
    metadata=metadata,
    migrations="kiban_linkage.store:migrations",
    title="Kiban linkage",
    routers=routers,
    consumers=handlers,
)


def create_app(
    settings: LinkageSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(LinkageSettings), broker=broker)
