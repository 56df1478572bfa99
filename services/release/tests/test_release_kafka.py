"""The release service on real Kafka and PostgreSQL: the test publishes the committee's decision
and (as the anonymizer) the built dataset on Kafka; the release becomes ready, is downloaded by
its applicant only, announces itself on `kiban.release.release-published.v1`, and a 50-row
excerpt of one of its files traces back to it from the PostgreSQL index."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import KafkaTransport
from kiban_common.events import (
    DATASET_REQUESTED,
    RELEASE_PUBLISHED,
    DatasetRequestedV1,
    ReleasePublishedV1,
    decode,
)
from kiban_common.settings import KafkaSettings
from kiban_release.domain.trace import Verdict
from kiban_release.main import create_app
from kiban_release.settings import ReleaseSettings
from kiban_release.tracing import trace_with_url
from kiban_testing import embedded_settings, eventually, running_service

from .conftest import (
    ADMIN,
    DOWNLOAD,
    OPERATOR,
    OTHER_RESEARCHER,
    RESEARCHER,
    FakeAnonymizer,
    FakeClock,
    anonymizer_running,
    decided,
    publish,
    sample_rows,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@contextlib.asynccontextmanager
async def watching(transport: KafkaTransport, topic: str) -> AsyncIterator[list[Any]]:
    """Collect every message of `topic` (from the start) in a group of its own."""
    seen: list[Any] = []
    consumer = await transport.consumer("watch-" + secrets.token_hex(4), [topic])

    async def run() -> None:
        while True:
            seen.extend(r.message for r in await consumer.getmany(timeout_ms=200, max_records=100))

    task = asyncio.create_task(run())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def test_approval_to_download_on_kafka_and_postgres(
    tmp_path: Path, clock: FakeClock, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    url = postgres_cluster.create_database(f"release_{secrets.token_hex(3)}")
    settings = embedded_settings(
        ReleaseSettings,
        tmp_path,
        database_url=url,
        bus="kafka",
        kafka_bootstrap=kafka_bootstrap,
        kafka={"topic_partitions": 1},
    )
    assert isinstance(settings, ReleaseSettings)
    transport = KafkaTransport(kafka_bootstrap, KafkaSettings(topic_partitions=1))
    await transport.start()
    application = "app-k-" + secrets.token_hex(4)
    fake = FakeAnonymizer(transport, settings.files_dir, applications={application})
    try:
        async with (
            running_service(functools.partial(create_app, clock=clock), settings) as svc,
            anonymizer_running(fake),
            watching(transport, RELEASE_PUBLISHED) as published,
            watching(transport, DATASET_REQUESTED) as requested,
        ):
            await publish(transport, decided(application))

            async def listed() -> list[dict[str, Any]]:
                r = await svc.client.get(
                    "/v1/releases",
                    params={"application_id": application},
                    headers=svc.auth(RESEARCHER, DOWNLOAD),
                )
                return list(r.json()["items"])

            items = await eventually(
                listed, until=lambda i: bool(i) and i[0]["status"] == "ready", timeout=60
            )
            release_id = items[0]["release_id"]
            built = fake.built[release_id]

            got = await svc.client.get(
                f"/v1/releases/{release_id}/files/patients.csv",
                headers=svc.auth(RESEARCHER, DOWNLOAD),
            )
            assert got.status_code == 200
            assert got.content == built.files["patients.csv"].read_bytes()
            other = await svc.client.get(
                f"/v1/releases/{release_id}/files/patients.csv",
                headers=svc.auth(OTHER_RESEARCHER, DOWNLOAD),
            )
            assert other.status_code == 404
            log = (
                await svc.client.get(
                    f"/v1/releases/{release_id}/downloads", headers=svc.auth(OPERATOR, ADMIN)
                )
            ).json()
            assert [(d["principal"], d["bytes"], d["completed"]) for d in log] == [
                (RESEARCHER, len(got.content), True)
            ]

            def mine(messages: list[Any]) -> list[ReleasePublishedV1]:
                events = [decode(m, ReleasePublishedV1).data for m in messages]
                return [e for e in events if e.release_id == release_id]

            ready = await eventually(lambda: _async(mine(published)), until=bool, timeout=30)
            assert [(e.status, e.application_id) for e in ready] == [("ready", application)]
            requests = [decode(m, DatasetRequestedV1).data for m in requested]
            assert [r.application_id for r in requests if r.release_id == release_id] == [
                application
            ]

            revoked = await svc.client.post(
                f"/v1/releases/{release_id}/revoke", headers=svc.auth(OPERATOR, ADMIN)
            )
            assert revoked.json()["status"] == "revoked"
            await eventually(
                lambda: _async([e.status for e in mine(published)]),
                until=lambda s: s == ["ready", "revoked"],
                timeout=30,
            )

        sample = sample_rows(built.files["conditions.csv"], tmp_path / "leak.csv", 50)
        result = await trace_with_url(url, sample)
        assert result.verdict is Verdict.RELEASE
        assert result.release_id == release_id
        assert result.recipient == RESEARCHER
    finally:
        await transport.stop()


async def _async(value: Any) -> Any:
    return value
