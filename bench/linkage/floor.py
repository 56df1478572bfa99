"""Bench: the floor under issue 5's streaming target — what a `record-received` → vault →
`record-linked` consumer costs per record on the fixed stack before any matching, measured in
the same run as the linkage service itself.

Three consumers run one after another, each in this process on a fresh PostgreSQL database
with the in-process bus and the service's own runtime (consumer runner, one transaction per
batch, inbox and outbox, outbox relay), fed the same `--stream` events:

1. `floor`: each record opened (identity and resources decrypted), its identity sealed into
   one vault row under a new random person key, `record-linked` emitted with its demographics
   and resources: the least a linkage unit does with a record, with no matching at all;
2. `floor + blind indexes`: the same plus a person row and the record's blind-indexed
   blocking keys (~14 rows; what the vault keeps for opt-out matching and other replicas);
3. `service`: the linkage service (`service.py`'s run on a small `--index`, default 10,000;
   its matching cost grows with the index: `service.py --index 1000000` measures that).

For each: CPU of this process (runner, handler, relay) and of PostgreSQL per record, their sum
(the machine's CPU per record, the bus aside), and the rate two cores would give at that sum
(2 / CPU per record) — an upper bound on this machine, where every process shares the two
cores. The engine's own matching cost per record (`run.py --only streaming`) adds to the
floor in any service that links.

    uv run python bench/linkage/floor.py [--stream 20000] [--index 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from service import committed, load_index, people, preload, stream_events

from kiban_common.bus import MemoryBroker
from kiban_common.events import (
    RECORD_RECEIVED,
    Event,
)
from kiban_common.outbox import Transaction
from kiban_common.service import build_app
from kiban_linkage.context import (
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.domain.linked import record_linked
from kiban_linkage.domain.matching import identity_from_mapping, normalize
from kiban_linkage.domain.persons import new_person_key
from kiban_linkage.main import DEFINITION, create_app
from kiban_linkage.settings import LinkageSettings
from kiban_linkage.store import vault
from kiban_testing import (
    PostgresCluster,
    embedded_settings,
    process_cpu_seconds,
    running_service,
)

TARGET_RATE = 5_000
CORES = 2


async def _flush(ctx: Linkage, tx: Transaction, events: list[Event[Any]], keys: bool) -> None:
    """The floor's work for a runner batch: open, seal, one vault row each, `record-linked`."""
    conn = await tx.session.connection()
    now = ctx.clock()
    rows, persons, digests, opened = [], [], [], []
    for event in events:
        identity = ctx.cipher.decrypt_json(event.data.identity, context=RECORD_RECEIVED_IDENTITY)
        content = ctx.cipher.decrypt_json(event.data.resources, context=RECORD_RECEIVED_RESOURCES)
        person = new_person_key()
        rows.append(
            {
                "record_key": event.key,
                "person_key": person,
                "institution_code": event.data.institution_code,
                "identity": ctx.seal_identity(identity),
                "created_at": now,
                "updated_at": now,
            }
        )
        pseudonym = ctx.pseudonym(person)
        if keys:
            persons.append({"person_key": person, "pseudonym": pseudonym, "created_at": now})
            digests.append(ctx.digests(normalize(identity_from_mapping(identity))))
        opened.append((event, identity, content.get("resources", []), pseudonym))
    if keys:
        await vault.add_persons(conn, persons)
    ids = await vault.add_records(conn, rows)
    if keys:
        await vault.add_blocking_key_arrays(
            conn,
            [d for ds in digests for d in ds],
            [i for i, ds in zip(ids, digests, strict=True) for _ in ds],
        )
    for event, identity, resources, pseudonym in opened:
        await tx.emit(
            record_linked(
                pseudonym=pseudonym,
                institution_code=event.data.institution_code,
                submission_id=event.data.submission_id,
                at=now,
                identity=identity,
                resources=resources,
            )
        )


def floor_app(keys: bool) -> Callable[..., Any]:
    """`create_app` for a linkage service whose only handler is the floor's."""

    def handlers(runtime: Any) -> dict[str, dict[str, Any]]:
        ctx: Linkage = runtime.context

        async def on_record_received(event: Event[Any], tx: Transaction) -> None:
            pending: list[Event[Any]] | None = tx.state.get("floor")
            if pending is None:
                pending = tx.state["floor"] = []
                tx.before_commit(functools.partial(_flush, ctx, tx, pending, keys))
            pending.append(event)

        return {"": {RECORD_RECEIVED: on_record_received}}

    definition = dataclasses.replace(DEFINITION, consumers=handlers, background={}, readiness={})

    def create(settings: LinkageSettings, *, broker: MemoryBroker | None = None) -> Any:
        return build_app(definition, settings, broker=broker)

    return create


async def measure(
    label: str,
    create: Callable[..., Any],
    database_url: str,
    args: argparse.Namespace,
    *,
    indexed: bool,
) -> tuple[str, float, float, float]:
    """(label, wall s, this process's CPU s, PostgreSQL's CPU s) for the stream."""
    rng = random.Random(20261122)
    broker = MemoryBroker()
    with tempfile.TemporaryDirectory() as state:
        settings = embedded_settings(LinkageSettings, Path(state), database_url=database_url)
        async with running_service(create, settings, broker=broker, gc_freeze=True) as svc:
            ctx: Linkage = svc.context
            # the floors get people enough to draw the stream from, nothing preloaded
            index = people(args.index if indexed else args.stream, rng)
            if indexed:
                await preload(ctx, svc.runtime, index)
                await load_index(svc.runtime)
            messages = stream_events(ctx, index, args.stream, rng)
            del index
            started, cpu = time.perf_counter(), time.process_time()
            tree = process_cpu_seconds(os.getpid())
            await broker.append(messages)
            while await committed(svc.runtime) < len(messages):  # noqa: ASYNC110 — polls
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            database = process_cpu_seconds(os.getpid()) - tree - cpu
    return label, elapsed, cpu, database


def report(results: list[tuple[str, float, float, float]], stream: int, index: int) -> None:
    print()
    print(f"{stream:,} record-received events each (service: into a {index:,}-record index)")
    print(
        f"{'consumer':<24} {'wall rate':>10} {'this process':>13} {'PostgreSQL':>11} "
        f"{'machine':>9} {'2-core bound':>13}"
    )
    for label, elapsed, cpu, database in results:
        ms = (cpu + database) / stream * 1000
        print(
            f"{label:<24} {stream / elapsed:>8,.0f}/s {cpu / stream * 1000:>10.3f} ms "
            f"{database / stream * 1000:>8.3f} ms {ms:>6.3f} ms {CORES / ms * 1000:>10,.0f}/s"
        )
    floor = results[0]
    floor_ms = (floor[2] + floor[3]) / stream * 1000
    budget = CORES / TARGET_RATE * 1000
    print(
        f"target: >= {TARGET_RATE:,} records/s on {CORES} cores = {budget:.2f} ms of machine CPU "
        f"per record; the floor takes {floor_ms:.3f} ms of it, leaving "
        f"{budget - floor_ms:.3f} ms for matching and all the rest (the engine's matching "
        "alone: `run.py --only streaming`, per CPU second)"
    )


async def main_async(args: argparse.Namespace, cluster: PostgresCluster) -> None:
    runs = [
        ("floor", floor_app(False), False),
        ("floor + blind indexes", floor_app(True), False),
        ("service", create_app, True),
    ]
    results = []
    for n, (label, create, indexed) in enumerate(runs):
        url = cluster.create_database(f"linkage_floor_{n}")
        print(f"{label}: {args.stream:,} events ...", flush=True)
        results.append(await measure(label, create, url, args, indexed=indexed))
    report(results, args.stream, args.index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", type=int, default=20_000)
    parser.add_argument("--index", type=int, default=10_000)
    args = parser.parse_args()
    with PostgresCluster(server_settings={"shared_buffers": "3GB"}) as cluster:  # as service.py
        asyncio.run(main_async(args, cluster))


if __name__ == "__main__":
    main()
