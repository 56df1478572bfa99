"""End to end on a real Kafka broker and a real PostgreSQL: record-linked → research store →
dataset-requested → files + dataset-built, and person-purged → optout-applied, with the events
published to Kafka by the test as linkage and release would."""

from __future__ import annotations

import csv
import hashlib
import random
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.structs import TopicPartition
from anonymizer_kit import Peer, build_of, dataset_request, record, settings_for, stats

from kiban_anonymizer.main import create_app
from kiban_common.bus import KafkaTransport
from kiban_common.events import (
    ANONYMIZER_OPTOUT_APPLIED,
    DATASET_BUILT,
    DATASET_REQUESTED,
    PERSON_PURGED,
    RECORD_LINKED,
)
from kiban_common.settings import KafkaSettings
from kiban_testing import eventually, running_service

TOUCHED = [
    RECORD_LINKED,
    PERSON_PURGED,
    DATASET_REQUESTED,
    ANONYMIZER_OPTOUT_APPLIED,
    DATASET_BUILT,
]


async def _truncate(bootstrap: str, topics: list[str]) -> None:
    """Delete this test's events from the session's shared broker, so a later test that reads
    one of these topics from the beginning does not meet them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        await consumer.topics()  # load metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = await consumer.end_offsets(partitions)
        await admin.delete_records(
            {tp: RecordsToDelete(before_offset=end) for tp, end in ends.items() if end > 0}
        )
        assert await consumer.beginning_offsets(partitions) == ends
    finally:
        await admin.close()
        await consumer.stop()


async def test_linked_records_to_a_released_dataset_and_a_purge_on_kafka_and_postgres(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    run = secrets.token_hex(3)  # topics are shared by the session: ids of this run only
    url = postgres_cluster.create_database(f"anonymizer_{run}")
    settings = settings_for(
        tmp_path, database_url=url, bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    transport = KafkaTransport(kafka_bootstrap, KafkaSettings())
    await transport.start()
    peer = Peer(transport)
    rng = random.Random(11)
    people = [f"kp{run}{i:04d}{'b' * 16}" for i in range(30)]
    try:
        async with running_service(create_app, settings) as svc:
            for i, person in enumerate(people):
                codes = ["I50.0" if i % 2 else "I50.9"]
                await peer.linked(record(i, rng, codes=codes, person=person))
            await eventually(lambda: stats(svc), until=lambda s: s["persons"] == 30, timeout=90)

            await peer.purged(people[0], f"opt-{run}")
            acks = await peer.read(
                ANONYMIZER_OPTOUT_APPLIED,
                count=1,
                where=lambda a: a.optout_id == f"opt-{run}",
                timeout=90,
            )
            assert acks[0].matched == 1
            assert acks[0].purged["persons"] == 1

            release = f"rel-{run}"
            await peer.request(dataset_request(release, f"app-{run}", kind="pseudonymized"))
            anonymized = f"rel-{run}-a"
            await peer.request(dataset_request(anonymized, f"app-{run}", k=3))
            build = await build_of(svc, release, timeout=90)
            anon = await build_of(svc, anonymized, timeout=90)
            built = await peer.read(
                DATASET_BUILT,
                count=2,
                where=lambda b: b.release_id in (release, anonymized),
                timeout=90,
            )
            purged_id = svc.context.stable_id(f"app-{run}", people[0])
    finally:
        await transport.stop()
        await _truncate(kafka_bootstrap, TOUCHED)

    assert build["status"] == "ready", build["reason"]
    assert anon["status"] == "ready", anon["reason"]
    events = {b.release_id: b for b in built}
    assert events[release].status == "ready"
    assert events[anonymized].status == "ready"
    assert events[anonymized].privacy is not None
    assert (events[anonymized].privacy.achieved_k or 0) >= 3
    _check_files(list(events.values()), purged_id, release)


def _check_files(events: list[Any], purged_id: str, release: str) -> None:
    """Every file is where its uri says, with the announced sha256; the purged person is not
    in the pseudonymized release."""
    for event in events:
        for f in event.files:
            assert f.uri is not None
            path = Path(urlparse(f.uri).path)
            assert path.parent.name == event.release_id
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    pseudonymized = next(e for e in events if e.release_id == release)
    persons_csv = next(f for f in pseudonymized.files if f.name == "persons.csv")
    with Path(urlparse(persons_csv.uri).path).open(encoding="utf-8") as f:
        ids = {row["person_id"] for row in csv.DictReader(f)}
    assert len(ids) == 29
    assert purged_id not in ids
