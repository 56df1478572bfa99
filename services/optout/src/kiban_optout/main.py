"""Builds the optout service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_optout.api import routers
from kiban_optout.consumers import handlers
from kiban_optout.context import build_context
from kiban_optout.settings import OptoutSettings
from kiban_optout.store.encrypted import ENCRYPTED_COLUMNS
from kiban_optout.store.tables import metadata

DEFINITION = ServiceDefinition(
    name="optout",
    zone=Zone.INFORMATION,
    metadata=metadata,
    migrations="kiban_optout.store:migrations",
    title="Kiban optout",
    routers=routers,
    consumers=handlers,
    context=build_context,
    encrypted_columns=ENCRYPTED_COLUMNS,
)


def create_app(
    settings: OptoutSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(OptoutSettings), broker=broker)
