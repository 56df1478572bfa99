"""Delivery proofs of the event backbone, on both stacks (see conftest.py).

Each test writes state and events in one service ("producer") and applies them in another
("consumer"), each with its own database, through the outbox, the relay, the broker and the
consumer runner: the real pieces, nothing patched.
"""

from __future__ import annotations

from typing import Any

import pytest

from kiban_common.bus import BrokerUnavailable, Consumer, MemoryTransport, dead_letter_topic
from kiban_common.events import Event, Zone, ZoneViolation, encode
from kiban_common.outbox import Transaction

from .conftest import Stack, eventually
from .scenario import SecretThing, ThingDone, count, do_thing, effect_rows, record_effect


async def test_event_written_with_state_change_reaches_consumer_in_other_service(
    stack: Stack,
) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    stack.start(producer.relay.run())
    runner = consumer.consumer("g-consumer", {stack.done: record_effect(consumer)})
    stack.start(runner.run())

    event_id = await do_thing(producer, stack.done, "alpha", 1)

    async def arrived() -> bool:
        return len(await effect_rows(consumer)) == 1

    await eventually(arrived)
    assert await effect_rows(consumer) == [(event_id, "alpha", 1)]
    assert await count(producer, "kiban_outbox") == 0  # relayed and cleared


async def test_rolled_back_state_change_publishes_nothing(stack: Stack) -> None:
    producer = await stack.node("producer")

    class Refused(Exception):
        pass

    async def change_then_fail() -> None:
        async with producer.transaction() as tx:
            event = Event(
                type=stack.done, source="/kiban/producer", key="k", data=ThingDone(thing="no", n=0)
            )
            await tx.emit(event)
            raise Refused

    with pytest.raises(Refused):
        await change_then_fail()
    assert await count(producer, "kiban_outbox") == 0
    assert await producer.relay.relay_once() == 0


async def test_events_of_one_key_arrive_in_commit_order(stack: Stack) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    for n in range(50):
        await do_thing(producer, stack.done, "ordered", n, key="person-1")
    assert await producer.relay.relay_once() == 50
    runner = consumer.consumer("g-order", {stack.done: record_effect(consumer)})
    stack.start(runner.run())

    async def all_arrived() -> bool:
        return len(await effect_rows(consumer)) == 50

    await eventually(all_arrived)
    assert [n for _, _, n in await effect_rows(consumer)] == list(range(50))


async def test_consumer_crash_after_effect_before_offset_commit_applies_once(
    stack: Stack,
) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    await do_thing(producer, stack.done, "crash", 1)
    await producer.relay.relay_once()

    # First life: the effect commits, then the process dies before the offset commit.
    class Crash(BaseException):
        pass

    first = consumer.consumer("g-crash", {stack.done: record_effect(consumer)})
    transport = first._transport
    real_consumer = transport.consumer

    async def crashing_consumer(group: str, topics: Any) -> Consumer:
        inner = await real_consumer(group, topics)

        async def commit(_offsets: Any) -> None:
            raise Crash

        inner.commit = commit  # type: ignore[method-assign]
        return inner

    transport.consumer = crashing_consumer  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await first.run()
    transport.consumer = real_consumer  # type: ignore[method-assign]
    assert len(await effect_rows(consumer)) == 1

    # Second life: the same group gets the batch again and recognises it.
    second = consumer.consumer("g-crash", {stack.done: record_effect(consumer)})
    stack.start(second.run())

    async def redelivered() -> bool:
        return second.stats.duplicates >= 1

    await eventually(redelivered)
    assert len(await effect_rows(consumer)) == 1


async def test_same_event_delivered_twice_applies_once(stack: Stack) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    event = Event(
        type=stack.done, source="/kiban/producer", key="twice", data=ThingDone(thing="twice", n=7)
    )
    wire = encode(event)
    await producer.bus.publish([wire])
    await producer.bus.publish([wire])  # a relay that crashed before deleting its batch
    runner = consumer.consumer("g-twice", {stack.done: record_effect(consumer)})
    stack.start(runner.run())

    async def both_seen() -> bool:
        return runner.stats.processed + runner.stats.duplicates == 2

    await eventually(both_seen)
    assert await effect_rows(consumer) == [(event.id, "twice", 7)]
    assert runner.stats.duplicates == 1


async def test_poison_event_lands_in_dead_letter_topic_and_consumer_moves_on(
    stack: Stack,
) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    effect = record_effect(consumer)

    async def fails_on_poison(event: Event[Any], tx: Transaction) -> None:
        if event.data.thing == "poison":
            raise ValueError("this event can never be applied")
        await effect(event, tx)

    await do_thing(producer, stack.done, "good", 1)
    await do_thing(producer, stack.done, "poison", 2)
    await do_thing(producer, stack.done, "good", 3)
    await producer.relay.relay_once()
    garbage = encode(Event(type=stack.done, source="/x", key="g", data=ThingDone(thing="x", n=0)))
    await producer.bus.transport.send(
        [type(garbage)(topic=garbage.topic, key=b"g", value=b"{not json", headers=garbage.headers)]
    )
    await do_thing(producer, stack.done, "after", 4)
    await producer.relay.relay_once()

    runner = consumer.consumer("g-poison", {stack.done: fails_on_poison}, max_attempts=3)
    stack.start(runner.run())

    async def moved_on() -> bool:
        return [t for _, t, _ in await effect_rows(consumer)] == ["good", "good", "after"]

    await eventually(moved_on)
    assert runner.stats.dead_lettered == 2
    assert runner.stats.retries == 2  # the failing event was tried 3 times

    dlq = await consumer.bus.transport.consumer("dlq-reader", [dead_letter_topic("g-poison")])
    try:
        letters = []
        for _ in range(100):
            letters += await dlq.getmany(timeout_ms=200, max_records=10)
            if len(letters) >= 2:
                break
    finally:
        await dlq.stop()
    reasons = sorted(r.message.header("dlq_reason") or b"" for r in letters)
    assert reasons == [b"ValueError", b"malformed"]
    assert all(r.message.header("dlq_group") == b"g-poison" for r in letters)


async def test_broker_stopped_and_restarted_mid_stream_loses_nothing(stack: Stack) -> None:
    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    stack.start(producer.relay.run())
    runner = consumer.consumer("g-outage", {stack.done: record_effect(consumer)})
    stack.start(runner.run())

    for n in range(20):
        await do_thing(producer, stack.done, "before", n)

    async def first_half() -> bool:
        return len(await effect_rows(consumer)) == 20

    await eventually(first_half, within=60)
    await stack.stop_broker()
    for n in range(20):  # state changes keep committing while the broker is away
        await do_thing(producer, stack.done, "during", n)
    assert await count(producer, "kiban_outbox") > 0
    await stack.start_broker()
    for n in range(20):
        await do_thing(producer, stack.done, "after", n)

    async def everything() -> bool:
        return len(await effect_rows(consumer)) >= 60

    await eventually(everything, within=120)
    rows = await effect_rows(consumer)
    assert len(rows) == 60
    assert len({event_id for event_id, _, _ in rows}) == 60
    assert await count(producer, "kiban_outbox") == 0


async def test_information_zone_consumer_cannot_subscribe_to_identifiable_type(
    stack: Stack,
) -> None:
    info = await stack.node("info", Zone.INFORMATION)
    with pytest.raises(ZoneViolation) as refused:
        info.consumer("g-info", {stack.secret: record_effect(info)})
    assert stack.secret in str(refused.value)
    assert "information zone may not consume" in str(refused.value)
    # It may still consume what its zone allows.
    info.consumer("g-info", {stack.done: record_effect(info)})


async def test_information_zone_cannot_publish_core_encrypted_identifiable_type(
    stack: Stack,
) -> None:
    info = await stack.node("info", Zone.INFORMATION)
    event = Event(
        type=stack.secret, source="/kiban/info", key="k", data=SecretThing(sealed="v1.k1.abc")
    )
    with pytest.raises(ZoneViolation):
        async with info.transaction() as tx:
            await tx.emit(event)
    with pytest.raises(ZoneViolation):
        await info.bus.publish([encode(event)])
    assert await count(info, "kiban_outbox") == 0


async def test_memory_broker_outage_raises_broker_unavailable() -> None:
    transport = MemoryTransport()
    transport.broker.available = False
    wire = encode(Event(type="kiban.a.b.v1", source="/s", key="k", data=ThingDone(thing="t", n=1)))
    with pytest.raises(BrokerUnavailable):
        await transport.send([wire])


async def test_trace_context_rides_with_the_event_to_the_consumer(stack: Stack) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    producer = await stack.node("producer")
    consumer = await stack.node("consumer")
    produced, consumed = InMemorySpanExporter(), InMemorySpanExporter()
    producer_tracing, consumer_tracing = TracerProvider(), TracerProvider()
    producer_tracing.add_span_processor(SimpleSpanProcessor(produced))
    consumer_tracing.add_span_processor(SimpleSpanProcessor(consumed))

    with producer_tracing.get_tracer("test").start_as_current_span("POST /v1/things"):
        await do_thing(producer, stack.done, "traced", 1)
    await producer.relay.relay_once()
    runner = consumer.consumer(
        "g-trace", {stack.done: record_effect(consumer)}, tracer_provider=consumer_tracing
    )
    stack.start(runner.run())

    async def consumed_once() -> bool:
        return len(consumed.get_finished_spans()) == 1

    await eventually(consumed_once)
    (request,) = produced.get_finished_spans()
    (processing,) = consumed.get_finished_spans()
    assert processing.name == f"process {stack.done}"
    assert processing.context.trace_id == request.context.trace_id
    assert processing.parent is not None
    assert processing.parent.span_id == request.context.span_id
    assert set(processing.attributes or {}) == {
        "messaging.system",
        "messaging.destination.name",
        "messaging.message.id",
        "messaging.consumer.group.name",
    }
