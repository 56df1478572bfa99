"""Builds the intake service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_intake.api import routers
from kiban_intake.consumers import handlers
from kiban_intake.settings import IntakeSettings
from kiban_intake.store.tables import metadata

DEFINITION = ServiceDefinition(
    name="intake",
    zone=Zone.CORE,
    metadata=metadata,
    migrations="kiban_intake.store:migrations",
    title="Kiban intake",
    routers=routers,
    consumers=handlers,
)


def create_app(
    settings: IntakeSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(IntakeSettings), broker=broker)
