"""What a service declares about itself; the runtime builds everything else from it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from sqlalchemy import MetaData

from kiban_common.bus import Handler
from kiban_common.crypto import EncryptedColumn
from kiban_common.events import REGISTRY, EventRegistry, Zone

Handlers = Mapping[str, Mapping[str, Handler]]


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    zone: Zone
    metadata: MetaData
    migrations: str  # Alembic script location, `package:directory`
    title: str = ""
    routers: Sequence[APIRouter] = ()
    # consumer group suffix → (event type → handler); the group is `kiban-<service>[-suffix]`.
    # Handlers that need the service's context (keys, settings) come from a factory that
    # receives the `ServiceRuntime` once it is built.
    consumers: Handlers | Callable[[Any], Handlers] = field(default_factory=dict)
    registry: EventRegistry = REGISTRY
    # Built once per runtime (after engine, bus and keys) and kept as `runtime.context`: the
    # service's own objects (stores, clocks, engines) that routes and handlers share.
    context: Callable[[Any], Any] | None = None
    # Long-running loops (schedulers, expiry sweeps), each `async def loop(runtime)`; they are
    # supervised like the consumers and should return once `runtime.stopping` is set.
    background: Mapping[str, Callable[[Any], Awaitable[None]]] = field(default_factory=dict)
    # Body-size limits by path that differ from `KIBAN_HTTP__MAX_BODY_BYTES`; None for an
    # endpoint that streams large uploads itself (it enforces its own limits).
    body_limits: Mapping[str, int | None] = field(default_factory=dict)
    # Every stored column holding field-cipher tokens, with the context it is encrypted under:
    # what `kiban keys rotate` re-encrypts and `kiban keys retire` checks (`store/encrypted.py`).
    encrypted_columns: Sequence[EncryptedColumn] = ()
    # Checks `/readyz` adds to the database and the broker, each `check(runtime)` answering
    # "ok" or why not yet (linkage: its match index still loading).
    readiness: Mapping[str, Callable[[Any], str]] = field(default_factory=dict)

    def group(self, suffix: str) -> str:
        return f"kiban-{self.name}" + (f"-{suffix}" if suffix else "")
