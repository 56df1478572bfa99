"""Bench: opt-out requests accepted durably, and the time from POST to `applied`.

The optout service runs as it does in production: its own process (uvicorn), PostgreSQL, a real
Kafka broker, the outbox relay and the acknowledgement consumer. This process is the client
(HTTP over TCP, one institution-window token per 50 requests, a distinct synthetic person per
request). Printed next to the targets of issue 4:

1. accepted requests/s (202 = committed with its outbox event) at full load, and the latency
   of each request: target ≥ 1,000/s on 2 cores, p99 < 100 ms;
2. latency at a paced rate (`--paced-rate`, default 200/s), where queueing does not dominate;
3. POST → `applied` at `--applied-rate` (default 10/s): a SIMULATED core (a third process)
   consumes `optout-requested` from Kafka and publishes the three `optout-applied`
   acknowledgements (intake, linkage, anonymizer) at once. Until linkage and anonymizer are
   wired, this measures optout's own share of the path (outbox relay → Kafka → simulated
   core → Kafka → consumer runner → stored acknowledgements), not their work. Target
   p99 < 2 s (issue 4: under concurrent intake load, not reproduced here).

    uv run python bench/optout/run.py [--requests 5000] [--concurrency 32] [--workers 2]
        [--paced-rate 200] [--paced-seconds 10] [--applied 300] [--applied-rate 10]

Starts Kafka and PostgreSQL with the test harness (or uses KIBAN_TEST_KAFKA_BOOTSTRAP /
KIBAN_TEST_DATABASE_URL). The per-principal rate limit is switched off for the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import httpx
import uvloop

from kiban_testing import KafkaBroker, PostgresCluster, process_cpu_seconds
from kiban_testing.loadgen import LoadClient

KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ"


def kana_number(n: int) -> str:
    """n written in katakana digits: a distinct invented reading for each n."""
    digits, k = [], n
    while True:
        digits.append(KANA[k % len(KANA)])
        k //= len(KANA)
        if k == 0:
            return "".join(digits)


def person(n: int) -> dict[str, Any]:
    """A distinct synthetic person for each n (invented names)."""
    return {
        "family_name": "架空",
        "given_name": f"試{n}",
        "family_name_kana": "カクウ",
        "given_name_kana": kana_number(n),
        "birth_date": f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        "sex": ("male", "female")[n % 2],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the optout service (its own process) ----------------------------------------------------


def _bench_settings(state: str, database_url: str, bootstrap: str, port: int) -> Any:
    from kiban_common.settings import HttpSettings, KafkaSettings
    from kiban_optout.settings import OptoutSettings, RateLimitSettings
    from kiban_testing import embedded_settings

    return embedded_settings(
        OptoutSettings,
        Path(state),
        database_url=database_url,
        bus="kafka",
        kafka_bootstrap=bootstrap,
        kafka=KafkaSettings(topic_partitions=3),
        migrate_on_start=False,
        rate_limit=RateLimitSettings(enabled=False),
        http=HttpSettings(port=port),
    )


def _switch_audit_off() -> None:
    """Diagnostic only: how much the hash-chained audit log costs."""
    from kiban_common.outbox import Transaction
    from kiban_common.security import AuditMiddleware

    async def no_write(self: Any, record: Any) -> None:
        return None

    Transaction.audit = lambda self, *a, **k: None  # type: ignore[method-assign]
    AuditMiddleware.write = no_write  # type: ignore[method-assign]


def worker_app() -> Any:
    """One uvicorn worker's app (`--workers` > 1 imports this by name in each worker)."""
    from kiban_optout.main import create_app

    if os.environ["BENCH_AUDIT"] != "1":
        _switch_audit_off()
    settings = _bench_settings(
        os.environ["BENCH_STATE"],
        os.environ["BENCH_DATABASE_URL"],
        os.environ["BENCH_BOOTSTRAP"],
        int(os.environ["BENCH_PORT"]),
    )
    return create_app(settings)


def serve(
    state: str, database_url: str, bootstrap: str, port: int, audit: bool, workers: int
) -> None:
    """The optout service as production runs it: uvicorn, `workers` processes (one per core
    is what a 2-core pod would run), migrations applied once before they start."""

    from kiban_common.db import create_engine, migrate

    async def migrated() -> None:
        engine = create_engine(database_url)
        await migrate(engine, "kiban_optout.store:migrations")
        await engine.dispose()

    asyncio.run(migrated())
    os.environ.update(
        BENCH_STATE=state,
        BENCH_DATABASE_URL=database_url,
        BENCH_BOOTSTRAP=bootstrap,
        BENCH_PORT=str(port),
        BENCH_AUDIT="1" if audit else "0",
    )
    run_uvicorn("run:worker_app", port, workers)


def run_uvicorn(factory: str, port: int, workers: int = 1) -> None:
    """Serve `module:factory` of this folder on 127.0.0.1 (uvloop and httptools, as `kiban
    serve`), quietly."""
    import uvicorn

    uvicorn.run(
        factory,
        factory=True,
        app_dir=str(Path(__file__).parent),
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=60,
    )


# -- the simulated core (its own process) ----------------------------------------------------


def simulated_core(bootstrap: str, ready: ProcessEvent, stop: ProcessEvent) -> None:
    """Acknowledge every `optout-requested` at once as intake, linkage and anonymizer would
    (linkage matched one person, so one anonymizer acknowledgement)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from kiban_common.events import (
        OPTOUT_REQUESTED,
        Event,
        OptoutAppliedV1,
        OptoutRequestedV1,
        decode,
        encode,
    )

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            OPTOUT_REQUESTED,
            bootstrap_servers=bootstrap,
            group_id=f"simulated-core-{secrets.token_hex(3)}",
            auto_offset_reset="latest",
            enable_auto_commit=True,
        )
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
        await consumer.start()
        await producer.start()
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ready.set()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=100, max_records=500)
                futures = []
                for records in batches.values():
                    for record in records:
                        from kiban_common.events import WireMessage

                        event = decode(
                            WireMessage(
                                topic=OPTOUT_REQUESTED,
                                key=record.key or b"",
                                value=record.value or b"",
                                headers=tuple(record.headers or ()),
                            ),
                            OptoutRequestedV1,
                        )
                        wire_id = event.data.optout_id
                        for service, purged in (
                            ("intake", {"submissions": 1}),
                            ("linkage", {"identities": 1}),
                            ("anonymizer", {"rows": 1}),
                        ):
                            ack = encode(
                                Event(
                                    type=f"kiban.{service}.optout-applied.v1",
                                    source=f"/kiban/{service}",
                                    key=wire_id,
                                    data=OptoutAppliedV1(
                                        optout_id=wire_id,
                                        service=service,  # type: ignore[arg-type]
                                        applied_at=datetime.now(UTC),
                                        matched=1,
                                        purged=purged,
                                    ),
                                )
                            )
                            futures.append(
                                await producer.send(
                                    ack.topic,
                                    value=ack.value,
                                    key=ack.key,
                                    headers=list(ack.headers),
                                )
                            )
                if futures:
                    await asyncio.gather(*futures)
        finally:
            await consumer.stop()
            await producer.stop()

    asyncio.run(run())


# -- the client (this process) ---------------------------------------------------------------


class Client:
    """POSTs go through the lean bench client (`kiban_testing.loadgen`), which costs a fraction
    of httpx's CPU per request, so the client leaves the shared cores to the server; reads of
    status use httpx."""

    def __init__(self, base: str, state: Path) -> None:
        from kiban_common.devstate import dev_issuer

        self.http = httpx.AsyncClient(
            base_url=base,
            timeout=30,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        url = httpx.URL(base)
        self.load = LoadClient(url.host, url.port or 80, connections=256)
        self.issuer = dev_issuer(state)
        self.tokens: dict[int, str] = {}
        self.n = 0

    def headers(self, n: int) -> dict[str, str]:
        window = n // 50
        if window not in self.tokens:
            code = f"13{window:08d}"
            self.tokens[window] = self.issuer.mint(f"institution:{code}", ["optout:window"])
        return {"Authorization": f"Bearer {self.tokens[window]}"}

    async def post(self) -> tuple[float, str, dict[str, str]]:
        """One new request; returns its latency (ms), id and headers."""
        n, self.n = self.n, self.n + 1
        headers = self.headers(n)
        body = json.dumps({"action": "stop", "subject": person(n)}).encode()
        started = time.perf_counter()
        status, reply = await self.load.request(
            "POST",
            "/v1/optouts",
            body=body,
            headers={**headers, "Content-Type": "application/json"},
        )
        elapsed = (time.perf_counter() - started) * 1000
        if status != 202:
            raise RuntimeError(f"POST answered {status}: {reply[:200]!r}")
        return elapsed, json.loads(reply)["optout_id"], headers

    async def close(self) -> None:
        await self.http.aclose()
        await self.load.close()


async def full_load(client: Client, total: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            latency, _, _ = await client.post()
            latencies.append(latency)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started), latencies


async def paced(client: Client, rate: float, seconds: float) -> list[float]:
    latencies: list[float] = []
    total = int(rate * seconds)
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        latency, _, _ = await client.post()
        latencies.append(latency)

    started = time.perf_counter()
    for i in range(total):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return latencies


async def post_to_applied(client: Client, database: str, count: int, rate: float) -> list[float]:
    """POST at `rate`/s and time each until its three acknowledgements are stored (watched in
    the optout database every 10 ms, so polling adds no HTTP load); then every request is
    checked to read `applied` through the API."""
    from sqlalchemy import func, select

    from kiban_common.db import create_engine
    from kiban_optout.store.tables import acks

    engine = create_engine(database)
    started_at: dict[str, float] = {}
    results: dict[str, float] = {}
    headers_of: dict[str, dict[str, str]] = {}
    posting_done = False

    async def watch() -> None:
        while not posting_done or len(results) < len(started_at):
            pending = [i for i in started_at if i not in results]
            if pending:
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        select(acks.c.dispatch_id, func.count(func.distinct(acks.c.service)))
                        .where(acks.c.dispatch_id.in_(pending))
                        .group_by(acks.c.dispatch_id)
                    )
                    now = time.perf_counter()
                    for wire_id, services in rows.all():
                        if services == 3:
                            results[wire_id] = (now - started_at[wire_id]) * 1000
            await asyncio.sleep(0.01)

    async def one() -> None:
        started = time.perf_counter()
        _, optout_id, headers = await client.post()
        started_at[optout_id] = started
        headers_of[optout_id] = headers

    watcher = asyncio.create_task(watch())
    tasks = []
    begin = time.perf_counter()
    for i in range(count):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    posting_done = True
    await asyncio.wait_for(watcher, timeout=120)
    await engine.dispose()
    for optout_id, headers in headers_of.items():
        response = await client.http.get(f"/v1/optouts/{optout_id}", headers=headers)
        if response.json().get("status") != "applied":
            raise RuntimeError("a request with three acknowledgements does not read applied")
    return list(results.values())


# -- driver ----------------------------------------------------------------------------------


# Processes whose CPU the full-load phase reports, by name (filled by `infrastructure`).
BUDGET_PIDS: dict[str, int] = {}


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KIBAN_TEST_KAFKA_BOOTSTRAP")
        if not bootstrap:
            broker = stack.enter_context(KafkaBroker())
            bootstrap = broker.bootstrap
            if broker.pid is not None:
                BUDGET_PIDS["Kafka"] = broker.pid
        pg = stack.enter_context(PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")))
        if pg.pid is not None:
            BUDGET_PIDS["PostgreSQL"] = pg.pid
        yield bootstrap, pg


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine used so far (/proc/stat: all but idle and
    iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuBudget:
    """Where the CPU of a phase went, per request: the server, each process of
    `BUDGET_PIDS`, this client (its own threads only), and the rest of the machine."""

    def __init__(self, server_pid: int) -> None:
        self.pids = {"server": server_pid, **BUDGET_PIDS}

    def __enter__(self) -> CpuBudget:
        self._before = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        self._client, self._machine = time.process_time(), machine_busy_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = {
            name: process_cpu_seconds(pid) - self._before[name] for name, pid in self.pids.items()
        }
        self.used["client"] = time.process_time() - self._client
        machine = machine_busy_seconds() - self._machine
        self.used["rest of the machine"] = max(0.0, machine - sum(self.used.values()))

    def line(self, requests: int) -> str:
        parts = ", ".join(f"{name} {cpu / requests * 1000:.2f}" for name, cpu in self.used.items())
        total = sum(self.used.values()) / requests * 1000
        return (
            f"machine CPU per request: {total:.2f} ms ({parts}); at that cost two cores give at "
            f"most {2000 / total:,.0f} requests/s"
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def wait_ready(base: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=base) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise RuntimeError("the optout service did not become ready")


async def main(args: argparse.Namespace) -> None:
    context = mp.get_context("spawn")
    with infrastructure() as (bootstrap, pg), tempfile.TemporaryDirectory() as state:
        database = pg.create_database(f"optout_bench_{secrets.token_hex(3)}")
        port = free_port()
        from kiban_common.devstate import dev_issuer

        dev_issuer(Path(state))  # created once, before the server reads its JWKS
        server = context.Process(
            target=serve,
            args=(state, database, bootstrap, port, not args.no_audit, args.workers),
        )
        server.start()
        ready, stop = context.Event(), context.Event()
        core = context.Process(target=simulated_core, args=(bootstrap, ready, stop))
        base = f"http://127.0.0.1:{port}"
        client = Client(base, Path(state))
        try:
            await wait_ready(base)
            await full_load(client, 200, 8)  # warm-up: connections, JIT-free caches, topics
            print(f"full load: {args.requests} requests, {args.concurrency} concurrent ...")
            wall_before = time.perf_counter()
            with CpuBudget(server.pid or 0) as budget:
                rate, full = await full_load(client, args.requests, args.concurrency)
            server_cpu = budget.used["server"]
            server_share = server_cpu / (time.perf_counter() - wall_before)
            print(f"paced: {args.paced_rate:.0f} requests/s for {args.paced_seconds:.0f} s ...")
            slow = await paced(client, args.paced_rate, args.paced_seconds)
            core.start()
            await asyncio.to_thread(ready.wait, 60)
            print(
                f"POST → applied: {args.applied} requests at {args.applied_rate:.0f}/s, "
                "acknowledged by a SIMULATED core ..."
            )
            applied = await post_to_applied(client, database, args.applied, args.applied_rate)
        finally:
            stop.set()
            await client.close()
            server.terminate()
            server.join(30)
            if core.is_alive() or core.exitcode is None:
                with contextlib.suppress(AssertionError):
                    core.join(30)

    def verdict(ok: bool) -> str:
        return "OK" if ok else "MISSED"

    p50, p99 = statistics.median(full), percentile(full, 0.99)
    s50, s99 = statistics.median(slow), percentile(slow, 0.99)
    a50, a99 = statistics.median(applied), percentile(applied, 0.99)
    print()
    print(
        f"server CPU per request: {server_cpu / args.requests * 1000:.1f} ms at full load "
        f"({args.workers} worker(s); the server got {server_share:.0%} of one core; 1,000/s "
        "on 2 cores needs ≤ 2 ms per request)"
    )
    print(budget.line(args.requests))
    if args.no_audit:
        print("DIAGNOSTIC RUN: audit log switched off; not a valid measurement of the service")
    print(
        f"accepted (full load):   {rate:7.0f} requests/s   target ≥ 1,000/s     "
        f"{verdict(rate >= 1000)}"
    )
    print(
        f"latency at full load:   p50 {p50:6.1f} ms, p99 {p99:6.1f} ms   target p99 < 100 ms "
        f"{verdict(p99 < 100)}"
    )
    print(
        f"latency at {args.paced_rate:.0f}/s:       p50 {s50:6.1f} ms, p99 {s99:6.1f} ms   "
        f"target p99 < 100 ms {verdict(s99 < 100)}"
    )
    print(
        f"POST → applied:         p50 {a50:6.1f} ms, p99 {a99:6.1f} ms   target p99 < 2 s   "
        f"{verdict(a99 < 2000)}  (acknowledgements SIMULATED; linkage/anonymizer not wired)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--paced-rate", type=float, default=200)
    parser.add_argument("--paced-seconds", type=float, default=10)
    parser.add_argument("--applied", type=int, default=300)
    parser.add_argument("--applied-rate", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--no-audit",
        action="store_true",
        help="diagnostic: switch the audit log off in the server to measure its cost",
    )
    uvloop.run(main(parser.parse_args()))  # the same loop as the server: a leaner client
