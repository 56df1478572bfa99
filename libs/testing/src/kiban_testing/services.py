"""Run a service the way tests need it: its real app and lifespan, driven over ASGI.

`running_service` builds the app from the service's own `create_app` with the embedded default
(SQLite under a temp dir, in-process bus, development issuer and keys), or with overrides for
PostgreSQL and real Kafka. Services that share a `MemoryBroker` and a state directory talk to
each other through events exactly as in `kiban dev`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI

from kiban_common.bus import MemoryBroker
from kiban_common.devstate import dev_issuer, dev_overrides
from kiban_common.service import ServiceRuntime
from kiban_common.settings import KibanSettings, load_settings

T = TypeVar("T")


@dataclass
class RunningService:
    app: FastAPI
    client: httpx.AsyncClient
    state: Path

    @property
    def runtime(self) -> ServiceRuntime:
        runtime: ServiceRuntime = self.app.state.runtime
        return runtime

    @property
    def context(self) -> Any:
        return self.runtime.context

    def token(
        self, sub: str, scopes: Sequence[str], claims: Mapping[str, Any] | None = None
    ) -> str:
        return dev_issuer(self.state).mint(sub, list(scopes), claims)

    async def until_ready(self, seconds: float = 10) -> httpx.Response:
        return await until_ready(self.client, seconds)

    def auth(
        self, sub: str, scopes: Sequence[str], claims: Mapping[str, Any] | None = None
    ) -> dict[str, str]:
        """Headers for a call as `sub` with `scopes` (a development-issuer token)."""
        return {"Authorization": f"Bearer {self.token(sub, scopes, claims)}"}


async def until_ready(client: httpx.AsyncClient, seconds: float = 10) -> httpx.Response:
    """`GET /readyz` until it answers 200 (or `seconds` pass): its last answer. A service's
    own checks (linkage: its match index, loaded at start) may take a moment after the
    database and the broker answer."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        ready = await client.get("/readyz")
        if ready.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return ready
        await asyncio.sleep(0.05)


def embedded_settings(
    settings_cls: type[KibanSettings], state: Path, **overrides: Any
) -> KibanSettings:
    """The embedded default for one service, with `overrides` (e.g. `database_url`, `bus`)."""
    zone = settings_cls.model_fields["zone"].default
    http = settings_cls.model_fields["http"].get_default(call_default_factory=True)
    name = settings_cls.__name__.removesuffix("Settings").lower()
    base = dev_overrides(state, name, http.port, "127.0.0.1", zone)
    return load_settings(settings_cls, **{**base, **overrides})


@asynccontextmanager
async def running_service(
    create_app: Callable[..., FastAPI],
    settings: KibanSettings,
    *,
    broker: MemoryBroker | None = None,
    client_address: str = "127.0.0.1",
    gc_freeze: bool = False,
) -> AsyncIterator[RunningService]:
    """Start the app's lifespan (migrations, relay, consumers) and yield a client for it.
    The service does not freeze the test process's heap (`KIBAN_GC_FREEZE`: each freeze
    collects the whole heap first) unless `gc_freeze` lets it do what its settings say."""
    if settings.gc_freeze and not gc_freeze:
        settings = settings.model_copy(update={"gc_freeze": False})
    app = create_app(settings, broker=broker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(client_address, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield RunningService(app=app, client=client, state=settings.state_dir)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    timeout: float = 15.0,  # noqa: ASYNC109 — the failure names the last probe result
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `until(result)` holds; fail with the last result after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in {timeout}s; last: {result!r}")
        await asyncio.sleep(interval)
