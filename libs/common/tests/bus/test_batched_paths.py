"""The batched paths of the bus and the outbox keep the semantics of the one-by-one paths.

- `KafkaTransport.send` builds one record batch per partition: each key must land on the
  partition `AIOKafkaProducer.send()` would choose (so Kiban's and any other client's events of
  one key share a partition), in order, also when a partition's messages fill several batches.
- The outbox writer inserts a transaction's events in one statement (column arrays on
  PostgreSQL): their ids, which are the relay's order, must follow the order of emission.
- The relay takes a batch with `DELETE ... RETURNING` on PostgreSQL: a failed publish must leave
  every row in place, and only a later acknowledged publish clears them.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select

from kiban_common.bus import BrokerUnavailable, KafkaTransport
from kiban_common.db import session_factory
from kiban_common.events import Event, WireMessage, decode
from kiban_common.outbox import OutboxRelay
from kiban_common.settings import KafkaSettings

from .conftest import Stack, eventually
from .scenario import ThingDone, count, do_thing, effect_rows, record_effect

PARTITIONS = 3


async def _read_all(bootstrap: str, topic: str, n: int) -> list[tuple[int, bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"check-{secrets.token_hex(3)}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[tuple[int, bytes, bytes]] = []
    try:
        for _ in range(300):
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                out.extend((tp.partition, r.key or b"", r.value or b"") for r in records)
            if len(out) >= n:
                break
    finally:
        await consumer.stop()
    return out


async def test_kafka_batches_put_each_key_where_aiokafka_would_in_order(
    kafka_bootstrap: str,
) -> None:
    settings = KafkaSettings(topic_partitions=PARTITIONS)
    ours, theirs = f"batched-{secrets.token_hex(4)}", f"plain-{secrets.token_hex(4)}"
    keys = [f"person-{i}".encode() for i in range(12)]
    # Large values for two keys fill several 256 KiB batches of their partitions.
    messages = [
        WireMessage(
            topic=ours,
            key=keys[i % len(keys)],
            value=f"{i:06d}".encode() + (b"x" * 90_000 if i % len(keys) < 2 else b""),
            headers=(("n", str(i).encode()),),
        )
        for i in range(240)
    ]
    transport = KafkaTransport(kafka_bootstrap, settings)
    await transport.start()
    plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4_000_000)
    await plain.start()
    try:
        await transport.ensure_topics([ours, theirs])
        await transport.send(messages)
        for key in keys:  # the same keys through the plain client, one by one
            await plain.send_and_wait(theirs, b"-", key=key)
    finally:
        await plain.stop()
        await transport.stop()

    received = await _read_all(kafka_bootstrap, ours, len(messages))
    reference = await _read_all(kafka_bootstrap, theirs, len(keys))
    assert len(received) == len(messages)
    where_plain = {key: partition for partition, key, _ in reference}
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for partition, key, value in received:
        assert partition == where_plain[key]
        by_key[key].append(int(value[:6]))
    assert len(set(where_plain.values())) > 1  # the keys really spread over partitions
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), key
        assert len(numbers) == len(messages) // len(keys)


async def test_events_of_one_transaction_are_relayed_in_emission_order(stack: Stack) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    async with producer.transaction() as tx:
        for n in range(60):
            await tx.emit(
                Event(
                    type=stack.done,
                    source="/kiban/producer",
                    key=f"person-{n % 3}",
                    data=ThingDone(thing=f"p{n % 3}", n=n),
                )
            )
    table = producer.metadata.tables["kiban_outbox"]
    async with producer.engine.connect() as conn:
        stored = (await conn.execute(select(table.c.value).order_by(table.c.id))).scalars().all()
    wires = [WireMessage(topic=stack.done, key=b"", value=value) for value in stored]
    assert [decode(wire, ThingDone).data.n for wire in wires] == list(range(60))

    assert await producer.relay.relay_once() == 60
    runner = consumer.consumer("g-one-tx", {stack.done: record_effect(consumer)})
    stack.start(runner.run())

    async def all_arrived() -> bool:
        return len(await effect_rows(consumer)) == 60

    await eventually(all_arrived)
    rows = await effect_rows(consumer)
    for person in ("p0", "p1", "p2"):
        numbers = [n for _, thing, n in rows if thing == person]
        assert numbers == sorted(numbers)
        assert len(numbers) == 20


async def test_failed_publish_keeps_every_row_and_a_later_one_clears_them(stack: Stack) -> None:
    producer = await stack.node("producer")
    async with producer.transaction() as tx:
        for n in range(5):
            await tx.emit(
                Event(type=stack.done, source="/kiban/p", key="k", data=ThingDone(thing="t", n=n))
            )
    sent: list[Sequence[WireMessage]] = []

    async def refuse(messages: Sequence[WireMessage]) -> None:
        sent.append(messages)
        raise BrokerUnavailable("no ack")

    failing = OutboxRelay(
        session_factory(producer.engine), producer.metadata.tables["kiban_outbox"], refuse
    )
    with pytest.raises(BrokerUnavailable):
        await failing.relay_once()
    assert [len(batch) for batch in sent] == [5]
    assert await count(producer, "kiban_outbox") == 5

    assert await producer.relay.relay_once() == 5
    assert await count(producer, "kiban_outbox") == 0
    assert [m.header("ce_type") for m in sent[0]] == [stack.done.encode()] * 5


async def test_stopped_runner_commits_its_last_batch_before_leaving(stack: Stack) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    for n in range(3):
        await do_thing(producer, stack.done, "first", n)
    await producer.relay.relay_once()
    first = consumer.consumer("g-handover", {stack.done: record_effect(consumer)})
    task = stack.start(first.run())

    async def applied() -> bool:
        return first.stats.processed == 3

    await eventually(applied)
    first.stop()  # the offset commit of the last batch may still be in flight here
    await task

    await do_thing(producer, stack.done, "second", 9)
    await producer.relay.relay_once()
    second = consumer.consumer("g-handover", {stack.done: record_effect(consumer)})
    stack.start(second.run())

    async def next_one() -> bool:
        return second.stats.processed == 1

    await eventually(next_one, within=60)
    assert second.stats.duplicates == 0  # nothing of the first batch came back
    assert [t for _, t, _ in await effect_rows(consumer)] == ["first"] * 3 + ["second"]
