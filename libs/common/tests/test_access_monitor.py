"""The access monitor and request limits, on a service built like every Kiban service.

A breach blocks the principal on the first call (403 `blocked`), publishes the alert, holds for
every later call and across a restart (the block is in the database), and only an operator
lifts it with a reason. Rate (429 + Retry-After) and body (413) limits apply to every route.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from sqlalchemy import MetaData, select

from kiban_common.bus import KafkaTransport, MemoryBroker
from kiban_common.db import shared_tables
from kiban_common.events import ALERT_RAISED, Event, Zone, decode
from kiban_common.events._models import AlertRaisedV1
from kiban_common.outbox import Transaction
from kiban_common.security import AUDIT_TABLE, bearer_principal
from kiban_common.service import ServiceDefinition, build_app
from kiban_common.settings import KafkaSettings, KibanSettings
from kiban_testing import embedded_settings, eventually, running_service

router = APIRouter()


@router.get("/v1/things")
async def read_things(principal: Annotated[Any, Depends(bearer_principal)]) -> dict[str, str]:
    return {"who": principal.subject}


@router.post("/v1/things")
async def write_thing(request: Request) -> dict[str, int]:
    return {"bytes": len(await request.body())}


class CoreSettings(KibanSettings):
    zone: Zone = Zone.CORE


def _definition(alerts: list[AlertRaisedV1]) -> ServiceDefinition:
    metadata = MetaData()
    shared_tables(metadata)

    async def on_alert(event: Event[Any], tx: Transaction) -> None:
        alerts.append(event.data)

    return ServiceDefinition(
        name="monitored",
        zone=Zone.CORE,
        metadata=metadata,
        migrations="kiban_intake.store:migrations",
        routers=[router],
        consumers={"alerts": {ALERT_RAISED: on_alert}},
    )


def _app(alerts: list[AlertRaisedV1]) -> Any:
    definition = _definition(alerts)

    def create_app(settings: KibanSettings, *, broker: MemoryBroker | None = None) -> FastAPI:
        return build_app(definition, settings, broker=broker)

    return create_app


OPERATOR = ("operator:o-1", ["admin"])
NIGHT_BATCH = {"institution": {"start": "01:00", "end": "04:00", "timezone": "Asia/Tokyo"}}


def _at(hour: int) -> datetime:
    return datetime(2026, 11, 20, hour - 9 if hour >= 9 else hour + 15, 0, tzinfo=UTC)


async def test_a_call_outside_the_batch_window_blocks_at_once_until_an_operator_lifts_it(
    tmp_path: Path,
) -> None:
    alerts: list[AlertRaisedV1] = []
    settings = embedded_settings(CoreSettings, tmp_path, monitor={"hours": NIGHT_BATCH})
    async with running_service(_app(alerts), settings, broker=MemoryBroker()) as svc:
        monitor = svc.app.state.access_monitor
        hospital = svc.auth("institution:1312345678", ["intake:submit"])
        monitor.clock = lambda: _at(2)  # 02:00 JST: inside the window
        assert (await svc.client.get("/v1/things", headers=hospital)).status_code == 200

        monitor.clock = lambda: _at(14)  # 14:00 JST: unscheduled
        refused = await svc.client.get("/v1/things", headers=hospital)
        assert refused.status_code == 403
        assert refused.json()["code"] == "blocked"
        await eventually(lambda: _value(alerts))
        assert alerts[0].rule == "hours"
        assert alerts[0].principal == "institution:1312345678"

        monitor.clock = lambda: _at(2)  # back in the window: still blocked
        still = await svc.client.get("/v1/things", headers=hospital)
        assert (still.status_code, still.json()["code"]) == (403, "blocked")

        listed = await svc.client.get("/v1/security/blocks", headers=svc.auth(*OPERATOR))
        assert listed.status_code == 200, listed.text
        assert [b["rule"] for b in listed.json()["blocks"]] == ["hours"]
        no_reason = await svc.client.post(
            "/v1/security/blocks/institution:1312345678/lift",
            json={},
            headers=svc.auth(*OPERATOR),
        )
        assert no_reason.status_code == 422
        not_operator = await svc.client.post(
            "/v1/security/blocks/institution:1312345678/lift",
            json={"reason": "batch moved to the day shift"},
            headers=svc.auth("institution:999", ["intake:submit"]),
        )
        assert not_operator.status_code == 403
        lifted = await svc.client.post(
            "/v1/security/blocks/institution:1312345678/lift",
            json={"reason": "batch moved to the day shift"},
            headers=svc.auth(*OPERATOR),
        )
        assert lifted.status_code == 200
        assert (await svc.client.get("/v1/things", headers=hospital)).status_code == 200

        audit = svc.runtime.definition.metadata.tables[AUDIT_TABLE]
        async with svc.runtime.engine.connect() as connection:
            actions = [
                (r.action, r.principal)
                for r in await connection.execute(
                    select(audit.c.action, audit.c.principal).where(audit.c.kind == "data")
                )
            ]
        assert ("block", "institution:1312345678") in actions
        assert ("lift_block", "operator:o-1") in actions


async def test_the_block_holds_across_a_restart(tmp_path: Path) -> None:
    policy = {"networks": {"institution:*": ["10.0.0.0/8"]}}
    settings = embedded_settings(CoreSettings, tmp_path, monitor=policy)
    hospital_sub = "institution:1312345678"
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        refused = await svc.client.get("/v1/things", headers=svc.auth(hospital_sub, []))
        assert (refused.status_code, refused.json()["code"]) == (403, "blocked")
    relaxed = embedded_settings(CoreSettings, tmp_path)  # policy gone, block stays
    async with running_service(_app([]), relaxed, broker=MemoryBroker()) as svc:
        again = await svc.client.get("/v1/things", headers=svc.auth(hospital_sub, []))
        assert (again.status_code, again.json()["code"]) == (403, "blocked")
        other = await svc.client.get("/v1/things", headers=svc.auth("institution:2", []))
        assert other.status_code == 200


@pytest.mark.parametrize(
    ("subject", "rule"),
    [("patient:p-1", "zone"), ("robot:r-1", "unknown_principal")],
)
async def test_principals_the_zone_does_not_serve_are_blocked(
    tmp_path: Path, subject: str, rule: str
) -> None:
    alerts: list[AlertRaisedV1] = []
    settings = embedded_settings(CoreSettings, tmp_path)
    async with running_service(_app(alerts), settings, broker=MemoryBroker()) as svc:
        refused = await svc.client.get("/v1/things", headers=svc.auth(subject, ["optout:self"]))
        assert (refused.status_code, refused.json()["code"]) == (403, "blocked")
        await eventually(lambda: _value(alerts))
        assert alerts[0].rule == rule


async def test_reads_over_the_ceiling_block_the_principal(tmp_path: Path) -> None:
    policy = {"read_ceilings": {"operator": {"limit": 3, "window_seconds": 60}}}
    settings = embedded_settings(CoreSettings, tmp_path, monitor=policy)
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        headers = svc.auth("operator:o-2", ["admin"])
        statuses = [
            (await svc.client.get("/v1/things", headers=headers)).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 403]


async def test_a_caller_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = embedded_settings(
        CoreSettings, tmp_path, limits={"requests_per_second": 0.01, "burst": 3}
    )
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        headers = svc.auth("operator:o-3", ["admin"])
        responses = [await svc.client.get("/v1/things", headers=headers) for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert responses[-1].json()["code"] == "rate_limited"
        assert int(responses[-1].headers["retry-after"]) >= 1
        other = await svc.client.get("/v1/things", headers=svc.auth("operator:o-4", ["admin"]))
        assert other.status_code == 200  # limits are per caller
        assert (await svc.client.get("/healthz")).status_code == 200


async def test_an_oversized_body_is_refused_with_413_declared_or_streamed(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(CoreSettings, tmp_path, http={"max_body_bytes": 2048})
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        headers = svc.auth("operator:o-5", ["admin"])
        small = await svc.client.post("/v1/things", content=b"x" * 1000, headers=headers)
        assert small.json() == {"bytes": 1000}
        declared = await svc.client.post("/v1/things", content=b"x" * 4096, headers=headers)
        assert (declared.status_code, declared.json()["code"]) == (413, "body_too_large")

        async def chunks() -> Any:
            for _ in range(4):
                yield b"y" * 1024

        streamed = await svc.client.post("/v1/things", content=chunks(), headers=headers)
        assert (streamed.status_code, streamed.json()["code"]) == (413, "body_too_large")


@pytest.mark.kafka
async def test_the_alert_reaches_a_real_kafka_consumer(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    url = postgres_cluster.create_database(f"monitor_{secrets.token_hex(3)}")
    settings = embedded_settings(
        CoreSettings,
        tmp_path,
        database_url=url,
        bus="kafka",
        kafka_bootstrap=kafka_bootstrap,
        monitor={"networks": {"institution:*": ["10.0.0.0/8"]}},
    )
    transport = KafkaTransport(kafka_bootstrap, KafkaSettings())
    await transport.start()
    await transport.ensure_topics([ALERT_RAISED])
    consumer = await transport.consumer(f"it-{secrets.token_hex(3)}", [ALERT_RAISED])
    try:
        async with running_service(_app([]), settings) as svc:
            subject = f"institution:{secrets.token_hex(4)}"
            refused = await svc.client.get("/v1/things", headers=svc.auth(subject, []))
            assert refused.json()["code"] == "blocked"
            found: list[AlertRaisedV1] = []
            async with asyncio.timeout(30):
                while not found:
                    for received in await consumer.getmany(timeout_ms=1000, max_records=100):
                        event = decode(received.message, AlertRaisedV1)
                        if event.data.principal == subject:
                            found.append(event.data)
            assert found[0].rule == "network"
            assert found[0].service == "monitored"
    finally:
        await consumer.stop()
        await transport.stop()


async def _value(value: Any) -> Any:
    return value


async def _block_from_another_replica(svc: Any, subject: str) -> None:
    blocks = svc.runtime.definition.metadata.tables["kiban_blocks"]
    async with svc.runtime.engine.begin() as connection:
        await connection.execute(
            blocks.insert().values(principal=subject, rule="network", blocked_at=datetime.now(UTC))
        )


async def test_a_block_raised_by_another_replica_applies_within_the_refresh_period(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(CoreSettings, tmp_path, monitor={"blocks_refresh_seconds": 0.3})
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        hospital = svc.auth("institution:1312345678", [])
        assert (await svc.client.get("/v1/things", headers=hospital)).status_code == 200
        await _block_from_another_replica(svc, "institution:1312345678")

        async def refused() -> bool:
            return (await svc.client.get("/v1/things", headers=hospital)).status_code == 403

        await eventually(refused, timeout=2)


async def test_with_no_refresh_period_every_call_reads_the_blocks(tmp_path: Path) -> None:
    settings = embedded_settings(CoreSettings, tmp_path, monitor={"blocks_refresh_seconds": 0})
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        hospital = svc.auth("institution:1312345678", [])
        assert (await svc.client.get("/v1/things", headers=hospital)).status_code == 200
        await _block_from_another_replica(svc, "institution:1312345678")
        refused = await svc.client.get("/v1/things", headers=hospital)
        assert (refused.status_code, refused.json()["code"]) == (403, "blocked")


async def test_the_running_service_chains_audit_entries_soon_after_their_commit(
    tmp_path: Path,
) -> None:
    from kiban_common.security import AUDIT_ANCHORS_TABLE, verify_audit_log

    settings = embedded_settings(CoreSettings, tmp_path)
    async with running_service(_app([]), settings, broker=MemoryBroker()) as svc:
        hospital = svc.auth("institution:1312345678", [])
        for _ in range(3):
            assert (await svc.client.get("/v1/things", headers=hospital)).status_code == 200
        async with svc.runtime.transaction() as tx:
            tx.audit("things.read", refs=["t-1"], count=1, principal="institution:1312345678")
        tables = svc.runtime.definition.metadata.tables

        async def report() -> Any:
            async with svc.runtime.engine.connect() as connection:
                return await verify_audit_log(
                    connection, tables[AUDIT_TABLE], tables[AUDIT_ANCHORS_TABLE]
                )

        chained = await eventually(report, until=lambda r: r.pending == 0 and r.entries >= 4)
        assert chained.ok
