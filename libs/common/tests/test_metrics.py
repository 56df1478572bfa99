"""`GET /metrics`: Prometheus text with the series every service exposes, labelled by ids of
code (route templates, event types, groups, rules), never by principals, concrete paths or
values; served to the monitoring network only, outside the audit log, tracing and rate limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import MetaData, select

from kiban_common.bus import MemoryBroker
from kiban_common.events import Event, Zone
from kiban_common.events._models import AlertRaisedV1
from kiban_common.outbox import Transaction
from kiban_common.security import AUDIT_TABLE, Principal, require_scope
from kiban_common.service import (
    ServiceDefinition,
    ServiceRuntime,
    _runtime,
    build_app,
    current_runtime,
)
from kiban_common.service._runtime import ServiceRuntime as _Runtime
from kiban_common.settings import KibanSettings
from kiban_common.telemetry import build_tracer_provider
from kiban_common.telemetry._metrics import _find_middleware
from kiban_testing import RunningService, embedded_settings, eventually, running_service

ALERT = "kiban.security.alert-raised.v1"
THING_ID = "a9f3c2e1-0000-4000-8000-5eC2e7id"  # a concrete id that must never become a label
OPERATOR = "operator:metrics-op-7f3a"
POISON = "poison"  # an alert whose handler always fails: retried, then dead-lettered


class CoreSettings(KibanSettings):
    zone: Zone = Zone.CORE


class InformationSettings(KibanSettings):
    zone: Zone = Zone.INFORMATION


def _definition(zone: Zone) -> ServiceDefinition:
    from kiban_common.db import shared_tables

    metadata = MetaData()
    shared_tables(metadata)
    router = APIRouter()

    @router.get("/v1/things/{thing_id}")
    async def thing(
        thing_id: str, principal: Annotated[Principal, Depends(require_scope("admin"))]
    ) -> dict[str, str]:
        return {"id": thing_id}

    @router.post("/v1/alerts/{principal_id}", status_code=202)
    async def alert(
        principal_id: str,
        runtime: Annotated[ServiceRuntime, Depends(current_runtime)],
        principal: Annotated[Principal, Depends(require_scope("admin"))],
    ) -> dict[str, str]:
        async with runtime.transaction() as tx:
            data = AlertRaisedV1(
                service="metrics",
                principal=principal_id,
                rule="hours",
                action="blocked",
                at=datetime.now(UTC),
            )
            await tx.emit(Event(type=ALERT, source="/kiban/metrics", key=principal_id, data=data))
        return {"status": "accepted"}

    async def on_alert(event: Event[Any], tx: Transaction) -> None:
        if event.data.principal == POISON:
            raise RuntimeError("this handler refuses the poison alert")

    return ServiceDefinition(
        name="metrics",
        zone=zone,
        metadata=metadata,
        migrations="kiban_intake.store:migrations",
        routers=[router],
        consumers={"": {ALERT: on_alert}},
    )


def _factory(zone: Zone) -> Any:
    definition = _definition(zone)

    def create_app(settings: KibanSettings, *, broker: MemoryBroker | None = None) -> FastAPI:
        return build_app(definition, settings, broker=broker)

    return create_app


def _settings(zone: Zone, tmp_path: Path, **overrides: Any) -> KibanSettings:
    cls = CoreSettings if zone is Zone.CORE else InformationSettings
    return embedded_settings(
        cls,
        tmp_path,
        consumer={"max_attempts": 2, "backoff_initial_ms": 1, "backoff_max_ms": 5},
        **overrides,
    )


async def _scrape(svc: RunningService) -> tuple[httpx.Response, list[Sample]]:
    response = await svc.client.get("/metrics")
    assert response.status_code == 200, response.text
    samples = [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]
    return response, samples


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None


def _label_values(samples: list[Sample]) -> Iterator[str]:
    for sample in samples:
        yield from sample.labels.values()


async def test_metrics_answer_in_prometheus_text_with_http_outbox_and_consumer_series(
    tmp_path: Path,
) -> None:
    async with running_service(
        _factory(Zone.CORE), _settings(Zone.CORE, tmp_path), broker=MemoryBroker()
    ) as svc:
        ops = svc.auth(OPERATOR, ["admin"])
        assert (await svc.client.get(f"/v1/things/{THING_ID}", headers=ops)).status_code == 200
        assert (await svc.client.get(f"/v1/things/{THING_ID}x", headers=ops)).status_code == 200
        assert (await svc.client.get(f"/v1/things/{THING_ID}")).status_code == 401
        assert (await svc.client.get(f"/v1/nowhere/{THING_ID}", headers=ops)).status_code == 404
        assert (await svc.client.put(f"/v1/things/{THING_ID}", headers=ops)).status_code == 405
        for principal in ("p-1", "p-2", POISON):
            got = await svc.client.post(f"/v1/alerts/{principal}", headers=ops)
            assert got.status_code == 202

        async def dead() -> int:
            return sum(r.stats.dead_lettered for r in svc.runtime.consumers)

        await eventually(dead, until=lambda n: n == 1)
        response, samples = await _scrape(svc)

    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    thing = {"route": "/v1/things/{thing_id}", "method": "GET"}
    assert _value(samples, "kiban_http_requests_total", **thing, status="200") == 2
    assert _value(samples, "kiban_http_requests_total", **thing, status="401") == 1
    assert (
        _value(samples, "kiban_http_requests_total", route="unmatched", method="GET", status="404")
        == 1
    )
    assert _value(samples, "kiban_http_requests_total", method="PUT", status="405") == 1
    assert _value(samples, "kiban_http_request_duration_seconds_count", **thing, status="200") == 2
    assert (
        _value(
            samples, "kiban_http_request_duration_seconds_bucket", **thing, status="200", le="+Inf"
        )
        == 2
    )
    assert _value(samples, "kiban_outbox_published_total", type=ALERT) == 3
    assert _value(samples, "kiban_outbox_relay_failures_total") == 0
    assert _value(samples, "kiban_outbox_pending") == 0
    group = svc.runtime.consumers[0].group
    assert _value(samples, "kiban_consumer_handled_total", group=group, type=ALERT) == 2
    assert _value(samples, "kiban_consumer_retried_total", group=group, type=ALERT) == 1
    assert _value(samples, "kiban_consumer_dead_lettered_total", group=group, type=ALERT) == 1
    assert _value(samples, "kiban_audit_write_failures_total") == 0
    # Scrapes and probes are not requests of the API.
    routes = {s.labels.get("route") for s in samples if s.name == "kiban_http_requests_total"}
    assert "/metrics" not in routes
    assert "/healthz" not in routes
    # Labels are ids of code: no principal, no concrete path, no id from a path.
    for value in _label_values(samples):
        assert THING_ID not in value
        assert "metrics-op" not in value
        assert "p-1" not in value
        assert not value.startswith(("operator:", "/v1/nowhere", "/v1/things/a9"))


async def test_a_block_by_the_access_monitor_is_counted_by_rule_without_the_principal(
    tmp_path: Path,
) -> None:
    async with running_service(
        _factory(Zone.CORE), _settings(Zone.CORE, tmp_path), broker=MemoryBroker()
    ) as svc:
        patient = svc.auth("patient:metrics-p-41", ["admin"])
        got = await svc.client.get(f"/v1/things/{THING_ID}", headers=patient)
        assert got.status_code == 403
        assert got.json()["code"] == "blocked"
        _, samples = await _scrape(svc)
    assert _value(samples, "kiban_monitor_blocks_total", rule="zone") == 1
    assert all("metrics-p-41" not in v for v in _label_values(samples))


async def test_audit_rows_that_could_not_be_written_are_counted(tmp_path: Path) -> None:
    async with running_service(
        _factory(Zone.CORE), _settings(Zone.CORE, tmp_path), broker=MemoryBroker()
    ) as svc:
        assert (await svc.client.get("/v1/things/t1")).status_code == 401
        audit: Any = _find_middleware(svc.app, "failed_writes")

        async def broken(row: dict[str, Any]) -> None:
            raise OSError("the database is away")

        audit.writer.append = broken
        assert (await svc.client.get("/v1/things/t2")).status_code == 401
        _, samples = await _scrape(svc)
    assert _value(samples, "kiban_audit_write_failures_total") == 1


async def test_requests_refused_before_routing_are_counted_under_their_route_template(
    tmp_path: Path,
) -> None:
    settings = _settings(Zone.CORE, tmp_path, limits={"requests_per_second": 0.001, "burst": 1})
    async with running_service(_factory(Zone.CORE), settings, broker=MemoryBroker()) as svc:
        assert (await svc.client.get(f"/v1/things/{THING_ID}")).status_code == 401
        assert (await svc.client.get(f"/v1/things/{THING_ID}")).status_code == 429
        for _ in range(20):  # scrapes are exempt from the rate limit
            _, samples = await _scrape(svc)
    assert (
        _value(
            samples,
            "kiban_http_requests_total",
            route="/v1/things/{thing_id}",
            method="GET",
            status="429",
        )
        == 1
    )


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()

    def with_memory(service: str, exporter_name: Any, **kwargs: Any) -> TracerProvider:
        return build_tracer_provider(service, exporter_name, extra_exporter=exporter, **kwargs)

    monkeypatch.setattr(_runtime, "build_tracer_provider", with_memory)
    return exporter


async def test_scrapes_leave_no_audit_row_and_no_span(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with running_service(
        _factory(Zone.INFORMATION), _settings(Zone.INFORMATION, tmp_path), broker=MemoryBroker()
    ) as svc:
        await _scrape(svc)
        await _scrape(svc)
        assert (await svc.client.get("/v1/things/t1")).status_code == 401
        runtime: _Runtime = svc.runtime
        table = runtime.definition.metadata.tables[AUDIT_TABLE]
        async with runtime.engine.connect() as connection:
            routes = [r.route for r in await connection.execute(select(table.c.route))]
    assert routes == ["/v1/things/{thing_id}"]
    names = [span.name for span in spans.get_finished_spans()]
    assert names  # the request to /v1/things made one
    assert not [n for n in names if "metrics" in n], names


@pytest.mark.parametrize("zone", [Zone.CORE, Zone.INFORMATION])
async def test_metrics_refuse_callers_outside_the_allowed_networks_or_behind_a_proxy(
    tmp_path: Path, zone: Zone
) -> None:
    async with running_service(
        _factory(zone), _settings(zone, tmp_path), broker=MemoryBroker()
    ) as svc:
        outside = httpx.ASGITransport(app=svc.app, client=("203.0.113.9", 40000))
        async with httpx.AsyncClient(transport=outside, base_url="http://svc") as client:
            refused = await client.get("/metrics")
        assert refused.status_code == 403
        assert refused.json()["code"] == ("zone_denied" if zone is Zone.CORE else "metrics_denied")
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
            proxied = await svc.client.get("/metrics", headers={header: "198.51.100.7"})
            assert proxied.status_code == 403, header
            assert proxied.json()["code"] == "metrics_denied"
        assert "kiban_" not in refused.text + proxied.text
        await _scrape(svc)  # from the loopback, directly: served


async def test_http_spans_carry_the_route_template_never_the_concrete_path(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    zone = Zone.CORE
    async with running_service(_factory(zone), _settings(zone, tmp_path)) as svc:
        headers = svc.auth("operator:o-1", ["admin"])
        await svc.client.get("/v1/things/山田1937?q=ヤマダ", headers=headers)
        await svc.client.get("/v1/nowhere/山田/1937-02-28", headers=headers)
    exporter = spans
    values = [str(v) for s in exporter.get_finished_spans() for v in (s.attributes or {}).values()]
    assert values
    assert not [v for v in values if "山田" in v or "1937" in v or "ヤマダ" in v], values
