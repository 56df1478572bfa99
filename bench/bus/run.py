"""Bench: events/s through outbox → Kafka → idempotent consumer, PostgreSQL on both sides.

Against a baseline measured in the same run on the same broker: raw aiokafka produce → consume
of the same payload bytes. As in production, the producing service and the consuming service are
separate processes (here: this one and a child), in both the baseline and the Kiban path.
Prints the figures with their targets (issue 2):
  end to end ≥ 5,000 events/s and ≥ 40 % of the raw rate; p99 delivery latency < 100 ms at
  1,000 events/s.
Also prints the CPU seconds each process spent per 1,000 events (less noisy than rates on a shared
machine). Every process runs uvloop, as `kiban serve` (uvicorn) does; `--loop asyncio` runs the
standard loop instead (the baseline always runs on the same loop as the Kiban path).

The consuming service's handler stores one row per event the way Kiban's batch handlers do
(linkage's `PendingRecords`): it collects the rows in `tx.state` and writes them with one Core
INSERT from `tx.before_commit`, in the transaction that records the event ids. `--orm-effect`
measures instead a handler that adds one sqlmodel object per event (flushed at the commit).

    uv run python bench/bus/run.py [--events 20000] [--latency-seconds 10] [--orm-effect]
                                   [--loop uvloop|asyncio]

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
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import DateTime, MetaData, func, insert, select
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
from kiban_common.telemetry import build_tracer_provider
from kiban_testing import KafkaBroker, PostgresCluster, process_cpu_seconds

PARTITIONS = 3
CONSUMER = registry()


class ConsumerModel(SQLModel, registry=CONSUMER):
    pass


class Effect(ConsumerModel, table=True):
    """What the consuming service stores per event, with the delivery latency it saw."""

    __tablename__ = "effects"
    id: int | None = Field(default=None, primary_key=True)
    seq: int
    created: datetime = Field(sa_type=DateTime(timezone=True))
    latency_ms: float
    # When the consumer wrote it (its clock; same machine): the end of the rate measurement,
    # so the producer can poll for completion rarely without adding to the figure.
    applied: datetime = Field(sa_type=DateTime(timezone=True))
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


def run_loop(main: Coroutine[Any, Any, None], loop: str) -> None:
    """Run `main` on `loop`: "uvloop" is the loop a service runs (`kiban serve` runs uvicorn,
    which takes uvloop, a kiban_common dependency, when it is installed); "asyncio" is the
    standard one. The baseline and the Kiban path always run on the same loop."""
    if loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


# -- the consuming process ------------------------------------------------------------------


def raw_consumer(
    bootstrap: str, topic: str, n: int, ready: ProcessEvent, done: ProcessEvent, loop: str
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

    run_loop(consume(), loop)


def kiban_consumer(
    bootstrap: str,
    event_type: str,
    url: str,
    ready: ProcessEvent,
    stop: ProcessEvent,
    orm_effect: bool,
    loop: str,
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

        effects = CONSUMER.metadata.tables["effects"]

        async def orm(event: Event[Any], tx: Transaction) -> None:
            # One ORM object per event, flushed with the batch's commit.
            now = datetime.now(UTC)
            tx.session.add(
                Effect(
                    seq=event.data.seq,
                    created=event.time,
                    event_id=event.id,
                    latency_ms=(now - event.time).total_seconds() * 1000,
                    applied=now,
                )
            )

        async def batched(event: Event[Any], tx: Transaction) -> None:
            # As Kiban's batch handlers do it: rows collected for the transaction, written with
            # one INSERT just before the commit; latency = that moment − the event's time.
            rows: list[Event[Any]] | None = tx.state.get("effects")
            if rows is None:
                rows = tx.state["effects"] = []

                async def flush() -> None:
                    now = datetime.now(UTC)
                    connection = await tx.session.connection()
                    await connection.execute(
                        insert(effects),
                        [
                            {
                                "seq": e.data.seq,
                                "created": e.time,
                                "event_id": e.id,
                                "latency_ms": (now - e.time).total_seconds() * 1000,
                                "applied": now,
                            }
                            for e in rows
                        ],
                    )

                tx.before_commit(flush)
            rows.append(event)

        effect = orm if orm_effect else batched
        # As a service builds it with the default KIBAN_TELEMETRY__EXPORTER=none.
        tracer_provider = build_tracer_provider("consumer", "none")
        runner = bus.consumer(
            f"bench-{event_type}",
            {event_type: effect},
            transactions=lambda: transaction(sessions, writer),
            processed=CONSUMER.metadata.tables["kiban_processed_events"],
            tracer_provider=tracer_provider,
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

    run_loop(run(), loop)


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


@dataclass
class Figures:
    """A rate, and the CPU seconds per 1,000 events of the producing and consuming process."""

    rate: float
    producer_cpu: float
    consumer_cpu: float


class CpuMeter:
    """CPU seconds of this process and of the consuming child over a stretch of work."""

    def __init__(self, child: int) -> None:
        self._child = child
        self._self = time.process_time()
        self._other = process_cpu_seconds(child)

    def figures(self, rate: float, n: int) -> Figures:
        return Figures(
            rate,
            (time.process_time() - self._self) * 1000 / n,
            (process_cpu_seconds(self._child) - self._other) * 1000 / n,
        )


async def raw_rate(bootstrap: str, n: int, value: bytes, loop: str) -> Figures:
    topic = f"bench-raw-{secrets.token_hex(4)}"
    context = mp.get_context("spawn")
    ready, done = context.Event(), context.Event()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=2
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")  # creates the topic
        process = _spawn(raw_consumer, bootstrap, topic, n + 1, ready, done, loop)
        assert process.pid is not None
        await _wait(ready)
        meter = CpuMeter(process.pid)
        start = time.perf_counter()
        futures = [await producer.send(topic, value, key=str(i % 64).encode()) for i in range(n)]
        await asyncio.gather(*futures)
        await _wait(done, within=300)
        figures = meter.figures(n / (time.perf_counter() - start), n)
        process.join(10)
        return figures
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
        await asyncio.sleep(0.1)  # the end time comes from the rows, not from this poll


async def last_applied(engine: AsyncEngine) -> datetime:
    async with engine.connect() as conn:
        table = CONSUMER.metadata.tables["effects"]
        return (await conn.execute(select(func.max(table.c.applied)))).scalar_one()  # type: ignore[no-any-return]


async def end_to_end_rate(
    producer: ProducerService,
    consumer_db: AsyncEngine,
    consumer_pid: int,
    n: int,
    writers: int = 8,
    per_tx: int = 50,
) -> Figures:
    """Writers commit state changes of `per_tx` events each, as fast as they can; the rate is
    `n` / (when the consumer wrote the last effect − the start)."""
    chunks = [range(s, min(s + per_tx, n)) for s in range(0, n, per_tx)]
    meter = CpuMeter(consumer_pid)
    start = datetime.now(UTC)

    async def writer(mine: list[range]) -> None:
        for chunk in mine:
            await producer.write(chunk)

    await asyncio.gather(*(writer(chunks[w::writers]) for w in range(writers)))
    await wait_applied(consumer_db, n)
    figures = meter.figures(0.0, n)  # CPU up to completion (+ at most one poll)
    figures.rate = n / (await last_applied(consumer_db) - start).total_seconds()
    return figures


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


async def main(events: int, latency_seconds: float, orm_effect: bool, loop: str) -> None:
    with infrastructure() as (bootstrap, pg):
        event_type = f"kiban.bench{secrets.token_hex(3)}.measured.v1"
        value = encode(measured(event_type, 0)).value
        print(f"raw aiokafka produce → consume of {events} events (two processes) ...", flush=True)
        raw = await raw_rate(bootstrap, events, value, loop)

        suffix = secrets.token_hex(3)
        consumer_url = pg.create_database(f"consumer_{suffix}")
        consumer_db = create_engine(consumer_url)
        async with consumer_db.begin() as conn:
            await conn.run_sync(CONSUMER.metadata.create_all)
        context = mp.get_context("spawn")
        ready, stop = context.Event(), context.Event()
        producer = ProducerService(bootstrap, pg.create_database(f"producer_{suffix}"), event_type)
        async with producer.running():
            process = _spawn(
                kiban_consumer, bootstrap, event_type, consumer_url, ready, stop, orm_effect, loop
            )
            assert process.pid is not None
            try:
                await _wait(ready)
                print(f"outbox → relay → Kafka → consumer runner, {events} events ...", flush=True)
                e2e = await end_to_end_rate(producer, consumer_db, process.pid, events)
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
    share = e2e.rate / raw.rate

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    print()
    print(
        f"event loop: {loop}; handler effect: "
        f"{'one ORM object per event' if orm_effect else 'one INSERT per batch'}"
    )
    print(f"raw Kafka rate:      {raw.rate:8.0f} events/s  (baseline, same broker, same run)")
    print(
        f"end-to-end rate:     {e2e.rate:8.0f} events/s  target ≥ 5,000       "
        f"{verdict(e2e.rate >= 5000)}"
    )
    print(
        f"share of raw rate:   {share:8.1%}           target ≥ 40 %        {verdict(share >= 0.4)}"
    )
    print(
        f"latency at 1,000/s:  p50 {p50:.1f} ms, p99 {p99:.1f} ms  target p99 < 100 ms  "
        f"{verdict(p99 < 100)}"
    )
    print(
        "CPU s per 1,000 events (producing / consuming process): "
        f"raw {raw.producer_cpu:.3f} / {raw.consumer_cpu:.3f}, "
        f"Kiban {e2e.producer_cpu:.3f} / {e2e.consumer_cpu:.3f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument(
        "--orm-effect",
        action="store_true",
        help="the consumer's handler adds one sqlmodel object per event instead of batching",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of every process, baseline included (services run uvloop)",
    )
    arguments = parser.parse_args()
    run_loop(
        main(arguments.events, arguments.latency_seconds, arguments.orm_effect, arguments.loop),
        arguments.loop,
    )
