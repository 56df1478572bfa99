"""The hooks a service uses to share its own objects: context, handler factory, background loops,
and the key material built from settings (sealing to the core zone from the information zone)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import MetaData

from kiban_common.bus import MemoryBroker
from kiban_common.events import Event, Zone
from kiban_common.events._models import AlertRaisedV1
from kiban_common.outbox import Transaction
from kiban_common.service import ServiceDefinition, ServiceRuntime, build_app
from kiban_common.settings import KibanSettings, SettingsError
from kiban_testing import embedded_settings, eventually, running_service

ALERT = "kiban.security.alert-raised.v1"


class CoreSettings(KibanSettings):
    zone: Zone = Zone.CORE


class InformationSettings(KibanSettings):
    zone: Zone = Zone.INFORMATION


def _definition(zone: Zone, seen: list[str], ticks: list[int]) -> ServiceDefinition:
    from kiban_common.db import shared_tables

    metadata = MetaData()
    shared_tables(metadata)

    def consumers(runtime: ServiceRuntime) -> dict[str, dict[str, Any]]:
        async def on_alert(event: Event[Any], tx: Transaction) -> None:
            seen.append(f"{runtime.context['name']}:{event.data.rule}")

        return {"": {ALERT: on_alert}}

    async def ticker(runtime: ServiceRuntime) -> None:
        while not runtime.stopping.is_set():
            ticks.append(1)
            await asyncio.sleep(0.01)

    return ServiceDefinition(
        name="hooks",
        zone=zone,
        metadata=metadata,
        migrations="kiban_intake.store:migrations",
        context=lambda runtime: {"name": f"ctx-{runtime.definition.name}"},
        consumers=consumers,
        background={"ticker": ticker},
    )


async def test_context_handler_factory_and_background_loop_run_with_the_service(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    ticks: list[int] = []
    definition = _definition(Zone.CORE, seen, ticks)

    def create_app(settings: KibanSettings, *, broker: MemoryBroker | None = None) -> FastAPI:
        return build_app(definition, settings, broker=broker)

    settings = embedded_settings(CoreSettings, tmp_path)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        assert svc.context == {"name": "ctx-hooks"}
        async with svc.runtime.transaction() as tx:
            data = AlertRaisedV1(
                service="hooks", principal="p", rule="hours", action="blocked", at=datetime.now(UTC)
            )
            await tx.emit(Event(type=ALERT, source="/kiban/hooks", key="p", data=data))
        await eventually(lambda: _value(seen), until=lambda s: s == ["ctx-hooks:hours"])
        await eventually(lambda: _value(len(ticks)), until=lambda n: n >= 2)
    stopped_at = len(ticks)
    await asyncio.sleep(0.05)
    assert len(ticks) == stopped_at  # the loop ended with the service


async def test_information_zone_seals_what_only_the_core_zone_can_open(tmp_path: Path) -> None:
    info = ServiceRuntime(
        _definition(Zone.INFORMATION, [], []), embedded_settings(InformationSettings, tmp_path)
    )
    core = ServiceRuntime(_definition(Zone.CORE, [], []), embedded_settings(CoreSettings, tmp_path))
    token = info.crypto.seal(b"subject", context="optout")
    assert token.startswith("s1.")
    assert core.crypto.unseal(token, context="optout") == b"subject"
    with pytest.raises(SettingsError, match="KIBAN_CRYPTO__SEALING_PRIVATE_KEY_FILE"):
        info.crypto.unseal(token, context="optout")
    for runtime in (info, core):
        await runtime.engine.dispose()


async def _value(value: Any) -> Any:
    return value


async def test_before_commit_steps_run_once_at_the_end_and_may_still_emit(tmp_path: Path) -> None:
    seen: list[str] = []
    definition = _definition(Zone.CORE, seen, [])

    def create_app(settings: KibanSettings, *, broker: MemoryBroker | None = None) -> FastAPI:
        return build_app(definition, settings, broker=broker)

    settings = embedded_settings(CoreSettings, tmp_path)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        order: list[str] = []
        async with svc.runtime.transaction() as tx:

            async def at_end() -> None:
                order.append("before_commit")
                data = AlertRaisedV1(
                    service="hooks",
                    principal="p",
                    rule="late",
                    action="blocked",
                    at=datetime.now(UTC),
                )
                await tx.emit(Event(type=ALERT, source="/kiban/hooks", key="p", data=data))

            tx.before_commit(at_end)
            order.append("body")
        assert order == ["body", "before_commit"]
        await eventually(lambda: _value(seen), until=lambda s: s == ["ctx-hooks:late"])


async def test_a_started_service_freezes_its_heap_unless_told_not_to(tmp_path: Path) -> None:
    """`KIBAN_GC_FREEZE` (on by default): once started, what is alive leaves the collector's
    generations; the test harness's `running_service` turns it off for test processes."""
    import gc

    settings = embedded_settings(CoreSettings, tmp_path, bus="memory")
    assert settings.gc_freeze
    app = build_app(_definition(Zone.CORE, [], []), settings, broker=MemoryBroker())
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process keeps collecting what the service left
    async with running_service(
        lambda s, broker: build_app(_definition(Zone.CORE, [], []), s, broker=broker),
        settings,
        broker=MemoryBroker(),
    ):
        assert gc.get_freeze_count() == 0


async def test_readyz_waits_for_the_services_own_readiness_checks(tmp_path: Path) -> None:
    import dataclasses

    state = {"index": "loading (12,000 of 1,000,000 records)"}

    def broken(runtime: ServiceRuntime) -> str:
        raise RuntimeError("no index")

    checks: dict[str, Any] = {"index": lambda runtime: state["index"], "other": broken}
    definition = dataclasses.replace(_definition(Zone.CORE, [], []), readiness=checks)

    def create_app(settings: KibanSettings, *, broker: MemoryBroker | None = None) -> FastAPI:
        return build_app(definition, settings, broker=broker)

    settings = embedded_settings(CoreSettings, tmp_path)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        waiting = await svc.client.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["checks"]["index"] == "loading (12,000 of 1,000,000 records)"
        assert waiting.json()["checks"]["other"] == "unavailable (RuntimeError)"
        state["index"] = "ok"
        del checks["other"]
        ready = await svc.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "index": "ok"}
