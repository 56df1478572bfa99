"""Builds the intake service: its definition, settings and FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_intake.api import routers
from kiban_intake.consumers import handlers
from kiban_intake.intake import Intake, scheduler
from kiban_intake.settings import IntakeSettings
from kiban_intake.store.encrypted import ENCRYPTED_COLUMNS
from kiban_intake.store.tables import metadata

DEFINITION = ServiceDefinition(
    name="intake",
    zone=Zone.CORE,
    metadata=metadata,
    migrations="kiban_intake.store:migrations",
    title="Kiban intake",
    routers=routers,
    consumers=handlers,
    context=Intake,
    background={"release-held-records": scheduler},
    # Both endpoints enforce their own size settings (bundle_max_bytes, bulk_max_bytes) while
    # streaming, so the common body limit steps aside for them.
    body_limits={"/v1/bundles": None, "/v1/bulk": None},
    encrypted_columns=ENCRYPTED_COLUMNS,
)


def create_app(
    settings: IntakeSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(IntakeSettings), broker=broker)
