"""Builds the release service: its definition, settings and FastAPI app."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_release.api import routers
from kiban_release.consumers import handlers
from kiban_release.context import Clock, ReleaseContext, build_context
from kiban_release.settings import ReleaseSettings
from kiban_release.store.tables import metadata
from kiban_release.sweep import expiry_sweep


def _context(runtime: Any) -> ReleaseContext:
    settings = runtime.settings
    assert isinstance(settings, ReleaseSettings)
    return build_context(settings)


DEFINITION = ServiceDefinition(
    name="release",
    zone=Zone.INFORMATION,
    metadata=metadata,
    migrations="kiban_release.store:migrations",
    title="Kiban release",
    routers=routers,
    consumers=handlers,
    context=_context,
    background={"expiry-sweep": expiry_sweep},
)


def create_app(
    settings: ReleaseSettings | None = None,
    *,
    broker: MemoryBroker | None = None,
    clock: Clock | None = None,
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given. `clock` replaces the
    system clock (tests of expiry)."""
    definition = DEFINITION
    if clock is not None:

        def context(runtime: Any) -> ReleaseContext:
            return build_context(runtime.settings, clock)

        definition = dataclasses.replace(DEFINITION, context=context)
    return build_app(definition, settings or load_settings(ReleaseSettings), broker=broker)
