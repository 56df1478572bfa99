"""Kafka through aiokafka: an idempotent producer, consumer groups with manual commits.

The producer has idempotence on (acks=all, ordered retries), so a batch sent in outbox order
lands in order per partition even when the client retries. Consumers never auto-commit: the
runner commits only after the database has committed the effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from kiban_common.bus._transport import BrokerUnavailable, Consumer, Received
from kiban_common.events import WireMessage
from kiban_common.settings import KafkaSettings

log = logging.getLogger("kiban.bus")
# The partitioner `AIOKafkaProducer.send()` uses when none is configured (as here).
_PARTITIONER = DefaultPartitioner()


@functools.lru_cache(maxsize=4096)
def _partition_of(key: bytes, count: int) -> int:
    """Index among `count` partitions of a key (pure-Python murmur2: worth remembering, since
    one person's or aggregate's events come in runs)."""
    return int(_PARTITIONER(key, list(range(count)), []))


def _partition(key: bytes, partitions: list[int]) -> int:
    return partitions[_partition_of(key, len(partitions))]


def client_options(bootstrap: str, settings: KafkaSettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    if settings.client_id:
        options["client_id"] = settings.client_id
    if settings.security_protocol.startswith("SASL"):
        assert settings.sasl_password is not None  # checked by the settings model
        options.update(
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password.get_secret_value(),
        )
    if settings.security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
    return options


class KafkaTransport:
    def __init__(self, bootstrap: str, settings: KafkaSettings | None = None) -> None:
        self._settings = settings or KafkaSettings()
        self._options = client_options(bootstrap, self._settings)
        self._producer: AIOKafkaProducer | None = None
        self._known_topics: set[str] = set()

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            **self._options,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            max_batch_size=256 * 1024,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BrokerUnavailable(f"cannot reach Kafka: {type(exc).__name__}") from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def ready(self) -> bool:
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout=2)
        except (KafkaError, TimeoutError, OSError):
            return False
        return True

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        missing = [t for t in topics if t not in self._known_topics]
        if not missing or not self._settings.create_topics:
            return
        admin = AIOKafkaAdminClient(**self._options)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(
                    t, self._settings.topic_partitions, self._settings.topic_replication_factor
                )
                for t in missing
                if t not in existing
            ]
            if new:
                # another replica may have created it first
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()
        self._known_topics.update(missing)

    async def send(self, messages: Sequence[WireMessage]) -> None:
        """Send `messages` as one record batch per partition and wait for every ack.

        The partition of each message is the one `producer.send()` would choose (aiokafka's
        default partitioner: murmur2 of the key over all partitions), so a key lands where
        any other Kafka client would put it. Batches of one partition are queued in message
        order (aiokafka queues a partition's batches behind one another and the idempotent
        producer numbers them), so order per key holds. Per message this skips what
        `send()` repeats (metadata lookups, a future each): the relay's largest Kafka cost.
        """
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the Kafka producer is not started")
        try:
            partitions: dict[str, list[int]] = {}
            for topic in dict.fromkeys(m.topic for m in messages):
                partitions[topic] = sorted(await producer.partitions_for(topic))
            open_batches: dict[tuple[str, int], BatchBuilder] = {}
            acks: list[asyncio.Future[Any]] = []
            for m in messages:
                where = (m.topic, _partition(m.key, partitions[m.topic]))
                batch = open_batches.get(where)
                if batch is None:
                    batch = open_batches[where] = producer.create_batch()
                headers = list(m.headers)
                if batch.append(key=m.key, value=m.value, timestamp=None, headers=headers) is None:
                    # Full: queue it (behind this partition's earlier batches), start another.
                    acks.append(await _submit(producer, batch, where))
                    batch = open_batches[where] = producer.create_batch()
                    # A batch always takes its first record, whatever its size.
                    batch.append(key=m.key, value=m.value, timestamp=None, headers=headers)
            for where, batch in open_batches.items():
                acks.append(await _submit(producer, batch, where))
            await asyncio.gather(*acks)
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

    async def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        await self.ensure_topics(topics)
        consumer = AIOKafkaConsumer(
            *topics,
            **self._options,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_poll_records=None,
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
        )
        await consumer.start()
        return KafkaConsumer(consumer)


async def _submit(
    producer: AIOKafkaProducer, batch: BatchBuilder, where: tuple[str, int]
) -> asyncio.Future[Any]:
    batch.close()  # nothing else may join it (a `send()` starts a batch of its own)
    topic, partition = where
    ack: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return ack


class KafkaConsumer:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Received]:
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Received] = []
        for tp, records in batches.items():
            for r in records:
                message = WireMessage(
                    topic=tp.topic,
                    key=r.key or b"",
                    value=r.value or b"",
                    headers=tuple(r.headers or ()),
                )
                out.append(Received(tp.topic, tp.partition, r.offset, message))
        return out

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        try:
            await self._consumer.commit(
                {
                    TopicPartition(topic, partition): offset
                    for (topic, partition), offset in offsets.items()
                }
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"commit failed: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        await self._consumer.stop()
