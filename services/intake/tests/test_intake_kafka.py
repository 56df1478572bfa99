"""On the production stack: PostgreSQL and a real Kafka broker. An accepted patient's records
reach a plain Kafka consumer as `record-received`, and an opt-out published on Kafka is applied
and acknowledged there."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from conftest import DAY0, FakeClock, Harness
from intake_builders import jp_patient, patient_bundle

from kiban_common.bus import MemoryBroker
from kiban_common.events import (
    INTAKE_OPTOUT_APPLIED,
    OPTOUT_REQUESTED,
    RECORD_RECEIVED,
    Event,
    OptoutAppliedV1,
    OptoutRequestedV1,
    RecordReceivedV1,
    WireMessage,
    decode,
    encode,
)
from kiban_intake.main import create_app
from kiban_intake.settings import IntakeSettings
from kiban_testing import embedded_settings, running_service

WAIT_SECONDS = 60


async def _first(bootstrap: str, topic: str, model: Any, match: Any) -> Event[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            async for m in consumer:
                wire = WireMessage(m.topic, m.key or b"", m.value or b"", tuple(m.headers or ()))
                event = decode(wire, model)
                if match(event):
                    return event
    finally:
        await consumer.stop()
    raise AssertionError("no matching event")


async def test_record_received_reaches_a_kafka_consumer_and_an_optout_is_applied(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    url = postgres_cluster.create_database(f"intake_{secrets.token_hex(4)}")
    settings = embedded_settings(
        IntakeSettings,
        tmp_path,
        database_url=url,
        bus="kafka",
        kafka_bootstrap=kafka_bootstrap,
        scheduler_interval_seconds=0.2,
    )
    async with running_service(create_app, settings) as svc:
        svc.context.clock = clock = FakeClock()
        h = Harness(svc, MemoryBroker(), clock)
        await h.register()
        await h.notice("KA1", DAY0 - timedelta(days=31))
        r = await h.post_bundle(patient_bundle("transaction", jp_patient("KA1"), n=4))
        assert r.status_code == 202, r.text
        submission_id = r.json()["submission_id"]

        event = await _first(
            kafka_bootstrap,
            RECORD_RECEIVED,
            RecordReceivedV1,
            lambda e: e.data.submission_id == submission_id,
        )
        identity, resources = h.open_event(event)
        assert identity["institution_patient_id"] == "KA1"
        assert len(resources) == event.data.resource_count == 4

        optout_id = f"oo-{uuid.uuid4().hex[:10]}"
        subject = {"family_name": "山田", "given_name": "太郎", "birth_date": "1980-01-02"}
        sealed = svc.runtime.crypto.seal(
            json.dumps(subject, ensure_ascii=False).encode(),
            context="kiban.optout.optout-requested.v1/subject",
        )
        data = OptoutRequestedV1(
            optout_id=optout_id, action="stop", scope="all", requester="self",
            requested_at=datetime.now(UTC), subject=sealed,
        )  # fmt: skip
        wire = encode(
            Event(type=OPTOUT_REQUESTED, source="/kiban/optout", key=optout_id, data=data)
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                wire.topic, wire.value, key=wire.key, headers=list(wire.headers)
            )
        finally:
            await producer.stop()
        applied = await _first(
            kafka_bootstrap,
            INTAKE_OPTOUT_APPLIED,
            OptoutAppliedV1,
            lambda e: e.data.optout_id == optout_id,
        )
        assert applied.data.matched == 1
        r = await h.post_bundle(patient_bundle("batch", jp_patient("KA1")))
        assert r.json()["patients"][0]["reason"] == "opted_out"
