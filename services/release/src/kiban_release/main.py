"""Builds the release service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_release.api import routers
from kiban_release.consumers import handlers
from kiban_release.settings import ReleaseSettings
from kiban_release.store.tables import metadata

DEFINITION = ServiceDefinition(
    name="release",
    zone=Zone.INFORMATION,
    metadata=metadata,
    migrations="kiban_release.store:migrations",
    title="Kiban release",
    routers=routers,
    consumers=handlers,
)


def create_app(
    settings: ReleaseSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(ReleaseSettings), broker=broker)
