"""What a service declares about itself; the runtime builds everything else from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fastapi import APIRouter
from sqlalchemy import MetaData

from kiban_common.bus import Handler
from kiban_common.events import REGISTRY, EventRegistry, Zone


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    zone: Zone
    metadata: MetaData
    migrations: str  # Alembic script location, `package:directory`
    title: str = ""
    routers: Sequence[APIRouter] = ()
    # consumer group suffix → (event type → handler); the group is `kiban-<service>[-suffix]`
    consumers: Mapping[str, Mapping[str, Handler]] = field(default_factory=dict)
    registry: EventRegistry = REGISTRY

    def group(self, suffix: str) -> str:
        return f"kiban-{self.name}" + (f"-{suffix}" if suffix else "")
