"""Bench: events/s through outbox → Kafka → idempotent consumer, PostgreSQL on both sides.

Against a baseline measured in the same run on the same broker: raw aiokafka produce → consume
of the same payload bytes. Prints the figures with their targets (issue 2):
  end to end ≥ 5,000 events/s and ≥ 40 % of the raw rate; p99 delivery latency < 100 ms at
  1,000 events/s.

    uv run python bench/bus/run.py [--events 20000] [--latency-seconds 10]

Uses the test harness to start a real Kafka broker and PostgreSQL (or KIBAN_TEST_KAFKA_BOOTSTRAP
/ KIBAN_TEST_DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
)

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


class Measured(EventData):
    seq: int
    payload: str


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KIBAN_TEST_KAFKA_BOOTSTRAP")
        if not bootstrap:
            bootstrap = stack.enter_context(KafkaBroker()).bootstrap
        pg = stack.enter_context(PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")))
        yield bootstrap, pg


async def raw_rate(bootstrap: str, n: int, value: bytes) -> float:
    topic = f"bench-raw-{secrets.token_hex(4)}"
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2
    )
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    try:
        start = time.perf_counter()

        async def produce() -> None:
            futures = [
                await producer.send(topic, value, key=str(i % 64).encode()) for i in range(n)
            ]
            await asyncio.gather(*futures)

        async def consume() -> None:
            seen = 0
            while seen < n:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                seen += sum(len(v) for v in batches.values())
                await consumer.commit()

        await asyncio.gather(produce(), consume())
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()
        await producer.stop()


class Pipeline:
    """Producer service (outbox + relay) and consumer service (runner + effect table)."""

    def __init__(self, bootstrap: str, pg: Any) -> None:
        svc = "bench" + secrets.token_hex(3)
        self.event_type = f"kiban.{svc}.measured.v1"
        self.registry = EventRegistry(
            [
                EventSpec(
                    self.event_type,
                    Classification.PSEUDONYMOUS,
                    Measured,
                    producers=frozenset({"p"}),
                    consumers=frozenset({"c"}),
                )
            ]
        )
        options = KafkaSettings(topic_partitions=3)
        self.bootstrap, self.options, self.pg, self.svc = bootstrap, options, pg, svc

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Pipeline]:
        self.p_meta, self.c_meta = MetaData(), MetaData()
        shared_tables(self.p_meta)
        shared_tables(self.c_meta)
        self.effects = Table(
            "effects",
            self.c_meta,
            Column("id", Integer, primary_key=True),
            Column("seq", Integer),
            Column("created", DateTime(timezone=True)),
            Column("latency_ms", Float),
            Column("event_id", String(64)),
        )
        self.p_engine = create_engine(self.pg.create_database(f"p_{self.svc}"), pool_size=20)
        self.c_engine = create_engine(self.pg.create_database(f"c_{self.svc}"), pool_size=20)
        async with self.p_engine.begin() as conn:
            await conn.run_sync(create_shared_tables)
        async with self.c_engine.begin() as conn:
            await conn.run_sync(create_shared_tables)
            await conn.run_sync(lambda c: self.effects.create(c))
        self.p_bus = Bus(
            KafkaTransport(self.bootstrap, self.options),
            service="p",
            zone=Zone.CORE,
            registry=self.registry,
        )
        self.c_bus = Bus(
            KafkaTransport(self.bootstrap, self.options),
            service="c",
            zone=Zone.CORE,
            registry=self.registry,
        )
        await self.p_bus.start()
        await self.c_bus.start()
        await self.p_bus.transport.ensure_topics([self.event_type])
        p_sessions = session_factory(self.p_engine)
        self.relay = OutboxRelay(
            p_sessions,
            self.p_meta.tables["kiban_outbox"],
            self.p_bus.publish,
            batch_size=1000,
            poll_interval=0.01,
        )
        self.writer = OutboxWriter(
            self.p_meta.tables["kiban_outbox"],
            zone=Zone.CORE,
            registry=self.registry,
            on_commit=self.relay.wake,
        )
        self.p_sessions = p_sessions
        c_sessions = session_factory(self.c_engine)
        c_writer = OutboxWriter(
            self.c_meta.tables["kiban_outbox"], zone=Zone.CORE, registry=self.registry
        )

        async def effect(event: Event[Any], tx: Transaction) -> None:
            now = datetime.now(UTC)
            await tx.session.exec(
                insert(self.effects).values(
                    seq=event.data.seq,
                    created=event.time,
                    event_id=event.id,
                    latency_ms=(now - event.time).total_seconds() * 1000,
                )
            )

        self.runner = self.c_bus.consumer(
            f"bench-{self.svc}",
            {self.event_type: effect},
            transactions=lambda: transaction(c_sessions, c_writer),
            processed=self.c_meta.tables["kiban_processed_events"],
            batch_size=1000,
            poll_timeout_ms=50,
        )
        tasks = [asyncio.create_task(self.relay.run()), asyncio.create_task(self.runner.run())]
        await asyncio.wait_for(self.runner.started.wait(), 30)
        try:
            yield self
        finally:
            self.relay.stop()
            self.runner.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.p_bus.stop()
            await self.c_bus.stop()
            await self.p_engine.dispose()
            await self.c_engine.dispose()

    def event(self, seq: int) -> Event[Measured]:
        return Event(
            type=self.event_type,
            source="/kiban/bench",
            key=f"person-{seq % 64}",
            data=Measured(seq=seq, payload="x" * 200),
        )

    async def write(self, events: list[Event[Measured]]) -> None:
        async with transaction(self.p_sessions, self.writer) as tx:
            for event in events:
                await tx.emit(event)

    async def applied(self) -> int:
        async with self.c_engine.connect() as conn:
            return int(
                (await conn.execute(select(func.count()).select_from(self.effects))).scalar_one()
            )

    async def wait_applied(self, n: int, within: float = 300) -> None:
        deadline = time.perf_counter() + within
        while await self.applied() < n:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"only {await self.applied()} of {n} applied")
            await asyncio.sleep(0.02)

    async def latencies(self) -> list[float]:
        async with self.c_engine.connect() as conn:
            return [
                float(v) for v in (await conn.execute(select(self.effects.c.latency_ms))).scalars()
            ]


async def end_to_end_rate(pipeline: Pipeline, n: int, writers: int = 8, per_tx: int = 50) -> float:
    start = time.perf_counter()
    chunks = [
        [pipeline.event(i) for i in range(s, min(s + per_tx, n))] for s in range(0, n, per_tx)
    ]
    queue: asyncio.Queue[list[Event[Measured]]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def writer() -> None:
        while not queue.empty():
            await pipeline.write(queue.get_nowait())

    await asyncio.gather(*(writer() for _ in range(writers)))
    await pipeline.wait_applied(n)
    return n / (time.perf_counter() - start)


async def paced_latency(pipeline: Pipeline, rate: int, seconds: float, offset: int) -> list[float]:
    """One event per transaction at `rate`/s; latency = applied time − event time."""
    interval = 1 / rate
    total = int(rate * seconds)
    start = time.perf_counter()
    pending: set[asyncio.Task[None]] = set()
    for i in range(total):
        target = start + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(pipeline.write([pipeline.event(offset + i)]))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    await pipeline.wait_applied(offset + total)
    return (await pipeline.latencies())[offset:]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(events: int, latency_seconds: float) -> None:
    with infrastructure() as (bootstrap, pg):
        value = encode(
            Event(
                type="kiban.bench.raw.v1",
                source="/kiban/bench",
                key="k",
                data=Measured(seq=0, payload="x" * 200),
            )
        ).value
        print(f"raw aiokafka produce→consume of {events} events ...", flush=True)
        raw = await raw_rate(bootstrap, events, value)
        print(
            f"outbox → relay → Kafka → consumer (PostgreSQL both sides), {events} events ...",
            flush=True,
        )
        async with Pipeline(bootstrap, pg).running() as pipeline:
            e2e = await end_to_end_rate(pipeline, events)
            print(f"paced 1,000 events/s for {latency_seconds:.0f}s ...", flush=True)
            lat = await paced_latency(pipeline, 1000, latency_seconds, offset=events)
    p50, p99 = statistics.median(lat), percentile(lat, 0.99)
    share = e2e / raw
    print()
    print(f"raw Kafka rate:          {raw:9.0f} events/s (baseline)")
    print(
        f"end-to-end rate:         {e2e:9.0f} events/s   target ≥ 5,000   "
        f"{'OK' if e2e >= 5000 else 'MISSED'}"
    )
    print(
        f"share of raw rate:       {share:9.1%}            target ≥ 40 %    "
        f"{'OK' if share >= 0.4 else 'MISSED'}"
    )
    print(
        f"latency at 1,000/s:      p50 {p50:6.1f} ms  p99 {p99:6.1f} ms   target p99 < 100 ms   "
        f"{'OK' if p99 < 100 else 'MISSED'}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.latency_seconds))
