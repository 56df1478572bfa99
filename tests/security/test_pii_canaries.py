"""PII canaries: identity that must never leave the places made for it.

Four services run in one process on the embedded bus (intake, linkage, anonymizer, optout).
Two synthetic people get canary identities (names, kana, birth dates, insurance numbers,
addresses that occur nowhere else); institutions post them in FHIR bundles, linkage links
them, the anonymizer stores them, and one of them opts out with deletion. Meanwhile every log
record of every logger at DEBUG and every span (name, attributes, events, resource) of every
service is captured. No canary, in any way it may be written (kanji, full- and half-width
kana, hiragana, ISO and compact dates), may appear in them; nor in the audit rows and outbox
rows of the information-zone database, nor in any event an information-zone service published,
nor in any service's `/metrics` output (after requests whose paths carry a canary).
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from kiban_cli import demo_data
from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_common.db import OUTBOX
from kiban_common.security import AUDIT_TABLE
from kiban_common.service import _runtime
from kiban_common.telemetry import build_tracer_provider
from kiban_testing import RunningService, embedded_settings, eventually, running_service

TODAY = date.today()
OPERATOR = ("operator:canary-ops", ["admin"])

# (family, given, family kana, given kana, birth date, insurance number, address)
CANARIES = [
    ("鵺野", "霞丸", "ヌエノ", "カスミマル", date(1937, 2, 28), "39871264", "東京都鵺区霞町9-8-7"),
    ("鷽田", "蕗子", "ウソダ", "フキコ", date(1941, 11, 13), "57319842", "東京都鷽区蕗町6-5-4"),
]


def _hiragana(text: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in text)


def canary_strings() -> set[str]:
    found: set[str] = set()
    for family, given, family_kana, given_kana, born, insurance, address in CANARIES:
        for kana in (family_kana, given_kana, family_kana + given_kana):
            found |= {kana, demo_data.half_width_kana(kana), _hiragana(kana)}
        found |= {family, given, family + given, f"{family} {given}", address}
        found |= {born.isoformat(), born.strftime("%Y%m%d"), born.strftime("%Y/%m/%d")}
        found.add(insurance)
    return found | {unicodedata.normalize("NFKC", s) for s in found}


def _people() -> demo_data.DemoData:
    data = demo_data.generate(TODAY, persons=12)
    others = [p for p in data.persons if p is not data.opted_out and p.heart_failure]
    for person, canary in zip([data.opted_out, others[0]], CANARIES, strict=True):
        family, given, family_kana, given_kana, born, insurance, address = canary
        person.family_name, person.given_name = family, given
        person.family_name_kana, person.given_name_kana = family_kana, given_kana
        person.family_variant = None
        person.birth_date, person.insurance_number, person.address = born, insurance, address
    return data


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record still leaves its raw parts
            text = f"{record.msg!r} {record.args!r}"
        parts = [record.name, text, str(record.__dict__.get("exc_text") or "")]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        self.lines.append(" ".join(parts))


@pytest.fixture
def logs() -> Iterator[_Capture]:
    capture = _Capture()
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    # Earlier tests in the same process may have left logging reconfigured (a root handler on a
    # closed capture stream, loggers disabled by a library's dictConfig): start from a clean
    # state so every record reaches the capture.
    logging.disable(logging.NOTSET)
    disabled = [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.disabled
    ]
    for logger in disabled:
        logger.disabled = False
    # Levels other tests set (e.g. `configure_logging` quietens alembic and httpx) are reset so
    # the capture sees every record; the product re-quietens its parameter loggers itself
    # whenever it creates an engine, which is part of what this test checks.
    leveled = {
        logger: logger.level
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET
    }
    for logger in leveled:
        logger.setLevel(logging.NOTSET)
    root.handlers[:] = [capture]
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for logger in disabled:
            logger.disabled = True
        for logger, previous in leveled.items():
            logger.setLevel(previous)


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()

    def with_memory(service: str, exporter_name: Any, **kwargs: Any) -> TracerProvider:
        return build_tracer_provider(service, exporter_name, extra_exporter=exporter, **kwargs)

    monkeypatch.setattr(_runtime, "build_tracer_provider", with_memory)
    return exporter


def _span_texts(exporter: InMemorySpanExporter) -> Iterator[str]:
    for span in exporter.get_finished_spans():
        yield span.name
        for key, value in {**(span.attributes or {}), **span.resource.attributes}.items():
            yield f"{key}={value}"
        for event in span.events:
            yield event.name
            for key, value in (event.attributes or {}).items():
                yield f"{key}={value}"
        if span.status.description:
            yield span.status.description


def _leaks(texts: list[str], where: str) -> list[str]:
    canaries = canary_strings()
    # The first word of a log line is its logger: it says where to look.
    return [
        f"{where} ({text.split(' ', 1)[0] if where == 'log' else '…'}): {c!r}"
        for text in texts
        for c in canaries
        if c in text
    ]


async def _rows(svc: RunningService, table_name: str) -> list[str]:
    table = svc.runtime.definition.metadata.tables[table_name]
    async with svc.runtime.engine.connect() as connection:
        rows = (await connection.execute(select(table))).all()
    return [repr(tuple(row)) for row in rows]


async def test_no_canary_identity_reaches_logs_spans_or_the_information_zone(
    tmp_path: Path, logs: _Capture, spans: InMemorySpanExporter
) -> None:
    data = _people()
    broker = MemoryBroker()
    started: dict[str, RunningService] = {}
    contexts = []
    try:
        for name in ("intake", "linkage", "anonymizer", "optout"):
            spec = SERVICES[name]
            context = running_service(
                spec.create_app, embedded_settings(spec.settings, tmp_path), broker=broker
            )
            started[name] = await context.__aenter__()
            contexts.append(context)
        await _scenario(started, data)
        leaks = _leaks(logs.lines, "log")  # before the test client's own httpx logs its paths
        # Canaries in request paths too: a path is the caller's own input; spans keep the route
        # template, audit rows and metric labels the template or the masked path.
        await _requests_with_canaries_in_paths(started, data)
        leaks += _leaks(list(_span_texts(spans)), "span")
        for name, svc in started.items():
            leaks += _leaks(await _rows(svc, AUDIT_TABLE), f"{name} audit row")
        leaks += _leaks(await _rows(started["optout"], OUTBOX), "optout outbox row")
        exposition = {name: await _metrics(svc) for name, svc in started.items()}
        for name, text in exposition.items():
            leaks += _leaks(text.splitlines(), f"{name} /metrics")
        for topic, messages in broker.logs.items():
            if topic.startswith(("kiban.optout.", "kiban.review.", "kiban.release.")):
                payloads = [m.value.decode("utf-8", "replace") for m in messages]
                leaks += _leaks(payloads, f"event {topic}")
    finally:
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)
    assert len(logs.lines) > 10  # the capture worked
    assert len(spans.get_finished_spans()) > 20
    # The scrape saw the scenario: requests by route and events by type, in every service.
    for name, text in exposition.items():
        assert "kiban_http_requests_total{" in text, name
    assert "kiban_outbox_published_total{" in exposition["intake"]
    assert "kiban_consumer_handled_total{" in exposition["linkage"]
    assert not leaks, "canary identity leaked:\n" + "\n".join(sorted(set(leaks)))


async def _metrics(svc: RunningService) -> str:
    response = await svc.client.get("/metrics")
    assert response.status_code == 200, response.status_code
    return response.text


async def _requests_with_canaries_in_paths(
    svc: dict[str, RunningService], data: demo_data.DemoData
) -> None:
    """Ids in paths are not labels: canaries in a matched route's id and in unmatched paths."""
    person = data.opted_out
    ops = svc["intake"].auth(*OPERATOR)
    for name, service in svc.items():
        for path in (
            f"/v1/nowhere/{person.family_name}/{person.birth_date.isoformat()}",
            f"/v1/{person.family_name_kana}",
        ):
            got = await service.client.get(path, headers=ops)
            assert got.status_code == 404, (name, got.status_code)
    got = await svc["optout"].client.get(
        f"/v1/optouts/{person.family_name}{person.insurance_number}",
        headers=svc["optout"].auth(*OPERATOR),
    )
    assert got.status_code in (404, 422), got.status_code


async def _scenario(svc: dict[str, RunningService], data: demo_data.DemoData) -> None:
    intake, optout = svc["intake"], svc["optout"]
    ops = intake.auth(*OPERATOR)
    for inst in demo_data.INSTITUTIONS:
        got = await intake.client.post(
            "/v1/institutions",
            json={"code": inst.code, "name": inst.name, "kind": inst.kind},
            headers=ops,
        )
        assert got.status_code == 201, got.status_code
    for inst in demo_data.INSTITUTIONS:
        headers = intake.auth(f"institution:{inst.code}", ["intake:submit", "optout:window"])
        got = await intake.client.post(
            "/v1/notices", json=demo_data.notices(data, inst.code), headers=headers
        )
        assert got.status_code == 200, got.status_code
        got = await intake.client.post(
            "/v1/bundles", json=demo_data.bundle(data, inst.code), headers=headers
        )
        assert got.status_code == 202, got.status_code
        assert got.json()["counts"]["rejected"] == 0
    persons = len(data.persons)

    async def stats(name: str) -> dict[str, Any]:
        response = await svc[name].client.get("/v1/stats", headers=svc[name].auth(*OPERATOR))
        body: dict[str, Any] = response.json()
        return body

    await eventually(lambda: stats("anonymizer"), until=lambda s: s["persons"] >= persons)
    person = data.opted_out
    claims = {
        "family_name": person.family_name,
        "given_name": person.given_name,
        "family_name_kana": person.family_name_kana,
        "given_name_kana": person.given_name_kana,
        "birthdate": person.birth_date.isoformat(),
        "gender": person.sex,
    }
    patient = optout.auth("patient:canary-1", ["optout:self"], claims)
    got = await optout.client.post(
        "/v1/optouts", json={"action": "stop_and_delete", "scope": "all"}, headers=patient
    )
    assert got.status_code == 202, got.status_code
    # The window files the second canary at an institution's counter (subject in the body).
    other = next(p for p in data.persons if p.family_name == CANARIES[1][0])
    code = next(iter(other.local_ids))
    window = optout.auth(f"institution:{code}", ["optout:window"])
    got = await optout.client.post(
        "/v1/optouts",
        json={
            "action": "stop",
            "scope": "all",
            "subject": {
                "family_name": other.family_name,
                "given_name": other.given_name,
                "family_name_kana": other.family_name_kana,
                "given_name_kana": other.given_name_kana,
                "birth_date": other.birth_date.isoformat(),
                "sex": other.sex,
                "postal_code": other.postal_code,
            },
        },
        headers=window,
    )
    assert got.status_code == 202, got.status_code
    await eventually(
        lambda: stats("anonymizer"), until=lambda s: s["purged_persons"] >= 1, timeout=30
    )
    await eventually(lambda: stats("linkage"), until=lambda s: s["persons"] >= 1)
    # A bad request with a canary in it: the error must not echo it either.
    bad = await optout.client.post(
        "/v1/optouts",
        json={
            "action": "stop",
            "scope": "all",
            "subject": {
                "family_name": person.family_name,
                "birth_date": "not-a-date-" + person.insurance_number,
            },
        },
        headers=window,
    )
    assert 400 <= bad.status_code < 500
    assert not _leaks([bad.text], "error body")
