"""Bench: events/s through outbox → Kafka → idempotent consumer, PostgreSQL on both sides.

Against a baseline measured in the same run on the same broker: raw aiokafka produce → consume
of the same payload bytes. As in production, the producing service and the consuming service are
separate processes (here: this one and a child), in both the baseline and the Kiban path.
Prints the figures with their targets (issue 2):
  end to end ≥ 5,000 events/s and ≥ 40 % of the raw rate; p99 delivery latency < 100 ms at
  1,000 events/s.

    uv run python bench/bus/run.py [--events 20000] [--latency-seconds 10]

Starts a real Kafka broker and PostgreSQL with the test harness (or uses
KIBAN_TEST_KAFKA_BOOTSTRAP / KIBAN_TEST_DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import DateTime, MetaData, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from kiban_common.bus import Bus, KafkaTransport
from kiban_common.db import create_engine, create_shared_tables, session_factory, shared_tables
from kiban_common.events import (
    Classification,
    Event,
    EventData,
    EventRegistry,
    EventSpec,
    Zone,
    encode,
)
from kiban_common.outbox import OutboxRelay, OutboxWriter, Transaction, transaction
from kiban_common.settings import KafkaSettings
from kiban_testing import KafkaBroker, PostgresCluster

PARTITIONS = 3
CONSUMER = registry()


class ConsumerModel(SQLModel, registry=CONSUMER):
    pass


class Effect(ConsumerModel, table=True):
    """What the consuming service stores per event, with the delivery latency it saw."""

    __tablename__ = "effects"
    id: int | None = Field(default=None, primary_key=True)
    seq: int
    created: datetime = Field(sa_type=DateTime(timezone=True))  # type: ignore[call-overload]
    latency_ms: float
    event_id: str


shared_tables(CONSUMER.metadata)


class Measured(EventData):
    seq: int
    payload: str


def bench_registry(event_type: str) -> EventRegistry:
    spec = EventSpec(
        event_type,
        Classification.PSEUDONYMOUS,
        Measured,
        producers=frozenset({"producer"}),
        consumers=frozenset({"consumer"}),
    )
    return EventRegistry([spec])


def measured(event_type: str, seq: int) -> Event[Measured]:
    return Event(
        type=event_type,
        source="/kiban/bench",
        key=f"person-{seq % 64}",
        data=Measured(seq=seq, payload="x" * 200),
    )


# -- the consuming process ------------------------------------------------------------------


def raw_consumer(
    bootstrap: str, topic: str, n: int, ready: ProcessEvent, done: ProcessEvent
) -> None:
    async def consume() -> None:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=topic,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        ready.set()
        try:
            seen = 0
            while seen < n:
                batches = await consumer.getmany(timeout_ms=200, max_records=1000)
                seen += sum(len(v) for v in batches.values())
                if batches:
                    await consumer.commit()
            done.set()
        finally:
            await consumer.stop()

    asyncio.run(consume())


def kiban_consumer(
    bootstrap: str, event_type: str, url: str, ready: ProcessEvent, stop: ProcessEvent
) -> None:
    async def run() -> None:
        engine = create_engine(url, pool_size=5)
        bus = Bus(
            KafkaTransport(bootstrap, KafkaSettings(topic_partitions=PARTITIONS)),
            service="consumer",
            zone=Zone.CORE,
            registry=bench_registry(event_type),
        )
        await bus.start()
        sessions = session_factory(engine)
        writer = OutboxWriter(CONSUMER.metadata.tables["kiban_outbox"], zone=Zone.CORE)

        async def effect(event: Event[Any], tx: Transaction) -> None:
            # As a service handler does it: an ORM object, flushed with the batch's commit.
            latency = (datetime.now(UTC) - event.time).total_seconds() * 1000
            tx.session.add(
                Effect(
                    seq=event.data.seq, created=event.time, event_id=event.id, latency_ms=latency
                )
            )

        runner = bus.consumer(
            f"bench-{event_type}",
            {event_type: effect},
            transactions=lambda: transaction(sessions, writer),
            processed=CONSUMER.metadata.tables["kiban_processed_events"],
            batch_size=1000,
            poll_timeout_ms=20,
        )
        task = asyncio.create_task(runner.run())
        await runner.started.wait()
        ready.set()
        await asyncio.to_thread(stop.wait)
        runner.stop()
        await task
        await bus.stop()
        await engine.dispose()

    asyncio.run(run())


# -- the producing process ------------------------------------------------------------------


def _spawn(target: Any, *args: Any) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


async def _wait(event: ProcessEvent, within: float = 120) -> None:
    deadline = time.perf_counter() + within
    while not event.is_set():
        if time.perf_counter() > deadline:
            raise TimeoutError("the consumer process did not answer")
        await asyncio.sleep(0.005)


async def raw_rate(bootstrap: str, n: int, value: bytes) -> float:
    topic = f"bench-raw-{secrets.token_hex(4)}"
    context = mp.get_context("spawn")
    ready, done = context.Event(), context.Event()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")  # creates the topic
        process = _spawn(raw_consumer, bootstrap, topic, n + 1, ready, done)
        await _wait(ready)
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=str(i % 64).encode()) for i in range(n)]
        await asyncio.gather(*futures)
        await _wait(done, within=300)
        rate = n / (time.perf_counter() - start)
        process.join(10)
        return rate
    finally:
        await producer.stop()


class ProducerService:
    """The producing service: a database with the outbox, and the relay."""

    def __init__(self, bootstrap: str, url: str, event_type: str) -> None:
        self.event_type = event_type
        self.metadata = MetaData()
        shared_tables(self.metadata)
        self.engine = create_engine(url, pool_size=20)
        self.bus = Bus(
            KafkaTransport(bootstrap, KafkaSettings(topic_partitions=PARTITIONS)),
            service="producer",
            zone=Zone.CORE,
            registry=bench_registry(event_type),
        )
        self.sessions = session_factory(self.engine)
        outbox = self.metadata.tables["kiban_outbox"]
        self.relay = OutboxRelay(
            self.sessions, outbox, self.bus.publish, batch_size=1000, poll_interval=0.01
        )
        self.writer = OutboxWriter(
            outbox, zone=Zone.CORE, registry=bench_registry(event_type), on_commit=self.relay.wake
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProducerService]:
        async with self.engine.begin() as conn:
            await conn.run_sync(create_shared_tables)
        await self.bus.start()
        await self.bus.transport.ensure_topics([self.event_type])
        task = asyncio.create_task(self.relay.run())
        try:
            yield self
        finally:
            self.relay.stop()
            await task
            await self.bus.stop()
            await self.engine.dispose()

    async def write(self, seqs: range) -> None:
        async with transaction(self.sessions, self.writer) as tx:
            for seq in seqs:
                await tx.emit(measured(self.event_type, seq))


async def applied(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        table = CONSUMER.metadata.tables["effects"]
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def wait_applied(engine: AsyncEngine, n: int, within: float = 300) -> None:
    deadline = time.perf_counter() + within
    while await applied(engine) < n:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"only {await applied(engine)} of {n} applied")
        await asyncio.sleep(0.01)


async def end_to_end_rate(
    producer: ProducerService, consumer_db: AsyncEngine, n: int, writers: int = 8, per_tx: int = 50
) -> float:
    """Writers commit state changes of `per_tx` events each, as fast as they can."""
    chunks = [range(s, min(s + per_tx, n)) for s in range(0, n, per_tx)]
    start = time.perf_counter()

    async def writer(mine: list[range]) -> None:
        for chunk in mine:
            await producer.write(chunk)

    await asyncio.gather(*(writer(chunks[w::writers]) for w in range(writers)))
    await wait_applied(consumer_db, n)
    return n / (time.perf_counter() - start)


async def paced_latency(
    producer: ProducerService,
    consumer_db: AsyncEngine,
    rate: int,
    seconds: float,
    offset: int,
    per_tx: int = 10,
) -> list[float]:
    """`rate` events/s in transactions of `per_tx` events; latency = when the consumer applied
    an event − when it was created, as the consumer measured it. (One Python process commits
    about 1,000 single-event transactions/s at most, so `per_tx=1` measures the writer, not
    the bus.)"""
    total = int(rate * seconds)
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    for i in range(0, total, per_tx):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(producer.write(range(offset + i, offset + i + per_tx)))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    await wait_applied(consumer_db, offset + total)
    async with consumer_db.connect() as conn:
        table = CONSUMER.metadata.tables["effects"]
        rows = await conn.execute(select(table.c.latency_ms).where(table.c.seq >= offset))
        return [float(v) for v in rows.scalars()]


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KIBAN_TEST_KAFKA_BOOTSTRAP")
        if not bootstrap:
            bootstrap = stack.enter_context(KafkaBroker()).bootstrap
        pg = stack.enter_context(PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")))
        yield bootstrap, pg


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(events: int, latency_seconds: float) -> None:
    with infrastructure() as (bootstrap, pg):
        event_type = f"kiban.bench{secrets.token_hex(3)}.measured.v1"
        value = encode(measured(event_type, 0)).value
        print(f"raw aiokafka produce → consume of {events} events (two processes) ...", flush=True)
        raw = await raw_rate(bootstrap, events, value)

        suffix = secrets.token_hex(3)
        consumer_url = pg.create_database(f"consumer_{suffix}")
        consumer_db = create_engine(consumer_url)
        async with consumer_db.begin() as conn:
            await conn.run_sync(CONSUMER.metadata.create_all)
        context = mp.get_context("spawn")
        ready, stop = context.Event(), context.Event()
        producer = ProducerService(bootstrap, pg.create_database(f"producer_{suffix}"), event_type)
        async with producer.running():
            process = _spawn(kiban_consumer, bootstrap, event_type, consumer_url, ready, stop)
            try:
                await _wait(ready)
                print(f"outbox → relay → Kafka → consumer runner, {events} events ...", flush=True)
                e2e = await end_to_end_rate(producer, consumer_db, events)
                print(
                    f"paced 1,000 events/s (100 transactions/s of 10) for {latency_seconds:.0f}s",
                    flush=True,
                )
                lat = await paced_latency(producer, consumer_db, 1000, latency_seconds, events)
            finally:
                stop.set()
                process.join(30)
        await consumer_db.dispose()

    p50, p99 = statistics.median(lat), percentile(lat, 0.99)
    share = e2e / raw

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    print()
    print(f"raw Kafka rate:      {raw:8.0f} events/s  (baseline, same broker, same run)")
    print(f"end-to-end rate:     {e2e:8.0f} events/s  target ≥ 5,000       {verdict(e2e >= 5000)}")
    print(
        f"share of raw rate:   {share:8.1%}           target ≥ 40 %        {verdict(share >= 0.4)}"
    )
    print(
        f"latency at 1,000/s:  p50 {p50:.1f} ms, p99 {p99:.1f} ms  target p99 < 100 ms  "
        f"{verdict(p99 < 100)}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.events, arguments.latency_seconds))
