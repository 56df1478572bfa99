"""On real Kafka and PostgreSQL: requests taken while the broker is down are published when it is
back, none lost; acknowledgements over Kafka, duplicated and out of order, make it `applied`."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kiban_common.bus import KafkaTransport
from kiban_common.events import OPTOUT_REQUESTED, OptoutRequestedV1, decode, encode
from kiban_common.settings import KafkaSettings
from kiban_optout.main import create_app
from kiban_optout.settings import OptoutSettings, RateLimitSettings
from kiban_testing import embedded_settings, eventually, running_service

from .conftest import PATIENT_SUBJECT, WINDOW, ack_event

KANA = "アイウエオカキクケコサシスセソタチツテト"


def _person(n: int) -> dict[str, Any]:
    """A distinct synthetic person per n."""
    return {
        **PATIENT_SUBJECT,
        "given_name": f"試{n}",
        "given_name_kana": KANA[n % 20] * (1 + n // 20),
    }


async def _outbox(svc: Any) -> int:
    async with svc.runtime.sessions() as session:
        conn = await session.connection()
        return int((await conn.execute(text("SELECT count(*) FROM kiban_outbox"))).scalar_one())


async def _read_requested(bootstrap: str, wanted: set[str]) -> dict[str, OptoutRequestedV1]:
    """Read `optout-requested` from the start with a fresh group until every wanted id is in."""
    transport = KafkaTransport(bootstrap, KafkaSettings(request_timeout_ms=5000))
    consumer = await transport.consumer(f"reader-{secrets.token_hex(4)}", [OPTOUT_REQUESTED])
    found: dict[str, OptoutRequestedV1] = {}
    duplicates = 0
    try:
        deadline = asyncio.get_running_loop().time() + 90
        while not wanted <= found.keys():
            assert asyncio.get_running_loop().time() < deadline, f"{len(found)} of {len(wanted)}"
            for received in await consumer.getmany(timeout_ms=500, max_records=500):
                event = decode(received.message, OptoutRequestedV1)
                if event.data.optout_id in found:
                    duplicates += 1
                found[event.data.optout_id] = event.data
    finally:
        await consumer.stop()
    return found


async def test_requests_survive_a_broker_outage_and_status_follows_acks_on_kafka(
    tmp_path: Path, kafka_broker: Any, postgres_cluster: Any
) -> None:
    url = postgres_cluster.create_database(f"optout_outage_{secrets.token_hex(3)}")
    settings = embedded_settings(
        OptoutSettings,
        tmp_path,
        database_url=url,
        bus="kafka",
        kafka_bootstrap=kafka_broker.bootstrap,
        kafka=KafkaSettings(topic_partitions=1, request_timeout_ms=5000),
        rate_limit=RateLimitSettings(window_burst=1000, window_per_second=1000),
    )
    async with running_service(create_app, settings) as svc:
        window = svc.auth(WINDOW, ["optout:window"])

        async def post(n: int) -> str:
            response = await svc.client.post(
                "/v1/optouts", json={"action": "stop", "subject": _person(n)}, headers=window
            )
            assert response.status_code == 202, response.text
            optout_id: str = response.json()["optout_id"]
            return optout_id

        before = [await post(n) for n in range(5)]
        await eventually(lambda: _outbox(svc), until=lambda n: n == 0, timeout=30)

        await asyncio.to_thread(kafka_broker.stop)
        try:
            during = [await post(n) for n in range(5, 25)]  # still taken, durably
            assert await _outbox(svc) == 20
            ready = await svc.client.get("/readyz")
            assert ready.status_code == 503
        finally:
            await asyncio.to_thread(kafka_broker.start)

        after = [await post(n) for n in range(25, 30)]
        await eventually(lambda: _outbox(svc), until=lambda n: n == 0, timeout=120)
        ids = before + during + after
        assert len(set(ids)) == 30
        published = await _read_requested(kafka_broker.bootstrap, set(ids))
        assert all(published[i].action == "stop" for i in ids)

        # The core's acknowledgements, over Kafka: out of order and each sent twice.
        core = KafkaTransport(kafka_broker.bootstrap, KafkaSettings(request_timeout_ms=5000))
        await core.start()
        try:
            target = during[0]
            acks = [
                ack_event("anonymizer", target, matched=1, purged={"rows": 4}),
                ack_event("intake", target, matched=1, purged={"submissions": 2}),
                ack_event("linkage", target, matched=1, purged={"identities": 1}),
            ]
            await core.ensure_topics([a.type for a in acks])
            await core.send([encode(a) for a in acks + acks])
        finally:
            await core.stop()

        async def status() -> dict[str, Any]:
            response = await svc.client.get(f"/v1/optouts/{target}", headers=window)
            body: dict[str, Any] = response.json()
            return body

        body = await eventually(status, until=lambda b: b["status"] == "applied", timeout=60)
        assert body["matched_persons"] == 1
        assert {s: a["purged"] for s, a in body["applied"].items()} == {
            "intake": 2,
            "linkage": 1,
            "anonymizer": 4,
        }
        assert {s: a["acknowledgements"] for s, a in body["applied"].items()} == {
            "intake": 1,
            "linkage": 1,
            "anonymizer": 1,
        }
