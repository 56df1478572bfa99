"""Every service, as built by its own `create_app`: health, readiness, OpenAPI, zone, migrations.

Embedded (SQLite + in-process bus) for all six; PostgreSQL + real Kafka for all six too, since
that is how they run in production.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from kiban_cli.services import SERVICES, Service
from kiban_common.bus import MemoryBroker
from kiban_common.db import create_engine, migrate, schema_drift
from kiban_common.devstate import dev_overrides
from kiban_common.settings import SettingsError, load_settings
from kiban_testing import until_ready

NAMES = list(SERVICES)


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            yield client


def _embedded(service: Service, state: Path, **extra: Any) -> Any:
    return load_settings(
        service.settings,
        **{
            **dev_overrides(
                state, service.name, service.port, "127.0.0.1", service.definition.zone
            ),
            **extra,
        },
    )


@pytest.mark.parametrize("name", NAMES)
async def test_embedded_service_is_healthy_ready_and_declares_its_zone(
    name: str, tmp_path: Path
) -> None:
    service = SERVICES[name]
    broker = MemoryBroker()
    app = service.create_app(_embedded(service, tmp_path), broker=broker)
    async for client in _client(app):
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "service": name,
            "zone": service.definition.zone.value,
        }
        ready = await until_ready(client)
        assert ready.status_code == 200, ready.text
        own = dict.fromkeys(service.definition.readiness, "ok")
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", **own}
        assert (await client.get("/openapi.json")).json()["info"]["title"].startswith("Kiban")

        broker.available = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["code"] == "not_ready"
        assert not_ready.json()["checks"]["broker"] == "unavailable"


@pytest.mark.parametrize("name", NAMES)
async def test_service_on_postgres_and_kafka_is_ready(
    name: str, tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    service = SERVICES[name]
    url = postgres_cluster.create_database(f"{name}_{secrets.token_hex(3)}")
    settings = _embedded(
        service, tmp_path, database_url=url, bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    async for client in _client(service.create_app(settings)):
        ready = await until_ready(client)
        assert ready.status_code == 200, ready.text


@pytest.mark.parametrize("name", NAMES)
async def test_migrations_create_exactly_the_declared_tables_on_postgres(
    name: str, postgres_cluster: Any
) -> None:
    service = SERVICES[name]
    engine = create_engine(postgres_cluster.create_database(f"m_{name}_{secrets.token_hex(3)}"))
    try:
        await migrate(engine, service.definition.migrations)
        assert await schema_drift(engine, service.definition.metadata) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("name", NAMES)
async def test_migrations_create_exactly_the_declared_tables_on_sqlite(
    name: str, tmp_path: Path
) -> None:
    service = SERVICES[name]
    engine = create_engine(f"sqlite:///{tmp_path}/{name}.db")
    try:
        await migrate(engine, service.definition.migrations)
        assert await schema_drift(engine, service.definition.metadata) == []
    finally:
        await engine.dispose()


async def test_service_refuses_to_start_on_an_unmigrated_database(tmp_path: Path) -> None:
    service = SERVICES["linkage"]
    app = service.create_app(_embedded(service, tmp_path, migrate_on_start=False))
    with pytest.raises(SettingsError, match="kiban migrate linkage"):
        async with app.router.lifespan_context(app):
            pass


def test_service_refuses_a_zone_other_than_its_own(tmp_path: Path) -> None:
    service = SERVICES["intake"]
    with pytest.raises(SettingsError, match="KIBAN_ZONE: intake runs in the core zone"):
        service.create_app(_embedded(service, tmp_path, zone="information"))


async def test_every_request_is_audited_including_ones_the_zone_guard_refuses(
    tmp_path: Path,
) -> None:
    from sqlalchemy import select

    service = SERVICES["linkage"]  # core zone: only loopback callers by default
    app = service.create_app(_embedded(service, tmp_path))
    runtime = app.state.runtime
    table = service.definition.metadata.tables["kiban_audit_log"]
    async with app.router.lifespan_context(app):
        for peer in (("127.0.0.1", 40001), ("203.0.113.9", 40002)):
            transport = httpx.ASGITransport(app=app, client=peer)
            async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
                response = await client.get("/openapi.json?patient=canary")
                assert response.status_code == (200 if peer[0] == "127.0.0.1" else 403)
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(select(table).order_by(table.c.id))).mappings().all()
    assert [(r["route"], r["status"], r["source"]) for r in rows] == [
        ("/openapi.json", 200, "127.0.0.1"),
        ("/openapi.json", 403, "203.0.113.9"),
    ]
    assert all("canary" not in str(dict(r)) for r in rows)  # no query strings kept
