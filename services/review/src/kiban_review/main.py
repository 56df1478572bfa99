"""Builds the review service: its definition, settings and FastAPI app."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import load_settings
from kiban_review.api import routers
from kiban_review.consumers import handlers
from kiban_review.context import ReviewContext
from kiban_review.settings import ReviewRules, ReviewSettings
from kiban_review.store.tables import metadata


def _context(runtime: Any) -> ReviewContext:
    rules = getattr(runtime.settings, "review", None)
    return ReviewContext(rules=rules if isinstance(rules, ReviewRules) else ReviewRules())


DEFINITION = ServiceDefinition(
    name="review",
    zone=Zone.INFORMATION,
    metadata=metadata,
    migrations="kiban_review.store:migrations",
    title="Kiban review",
    routers=routers,
    consumers=handlers,
    context=_context,
)


def create_app(
    settings: ReviewSettings | None = None, *, broker: MemoryBroker | None = None
) -> FastAPI:
    """The app; settings come from `KIBAN_*` variables unless given."""
    return build_app(DEFINITION, settings or load_settings(ReviewSettings), broker=broker)
