"""The linkage service's streaming rate: `record-received` events linked into a vault held on
PostgreSQL, through the service's own consumer runner (decrypt, normalize, candidates and
scores from the match index in memory, vault write with blind indexes and change-feed rows,
`record-linked` to the outbox, one transaction per batch under the vault lock).

    uv run python bench/linkage/service.py [--index 1000000] [--stream 20000]
        [--database-url postgresql://...] [--cold-cache] [--profile]

The index is preloaded straight into the service's tables (encrypted identities, blind indexes)
with synthetic people (surname frequencies from the engine's table, seeded) and loaded into the
service's memory as its `index-load` task does at start (`kiban_linkage.replica.load_index`: the
match index built from the vault, then `gc.collect()` + `gc.freeze()`; `--cold-cache` skips it,
which only an older tree without the match index survives); then `--stream` events (half new
people, half the indexed people again from another institution, with hiragana readings and some
moved) are put on the in-process bus at once and the time until the consumer has processed all
of them is measured. The in-process bus keeps Kafka out of the figure (`bench/bus` measures the
bus). Without `--database-url` (or `KIBAN_TEST_DATABASE_URL`) a throwaway PostgreSQL cluster is
started and its CPU time is reported too. Figures: wall rate, records per CPU second of this
process (the whole service: consumer runner, linking, outbox relay), and of this process plus
PostgreSQL; the resident set size before and after the index load and after the stream (the
generated people are dropped before the load; the encoded stream events stay, ~50 MB at 20k;
the peak includes generation and preload); the load average at both ends of the stream.
`--profile` prints a cProfile of the stream window (it inflates Python-heavy code; `py-spy
record --pid` is the fairer profile).

A/B against another tree: `PYTHONPATH=<tree>/services/linkage/src uv run python
bench/linkage/service.py ...` (a tree with `context.load_index` loads its cache that way; one
without either gets its cache filled the same way).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from kiban_common.bus import MemoryBroker
from kiban_common.events import RECORD_RECEIVED, Event, RecordReceivedV1, encode
from kiban_linkage.context import (
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.domain.matching import identity_from_mapping, normalize
from kiban_linkage.domain.persons import new_person_key
from kiban_linkage.main import create_app
from kiban_linkage.settings import LinkageSettings
from kiban_linkage.store import vault
from kiban_linkage.store.tables import records
from kiban_testing import (
    PostgresCluster,
    embedded_settings,
    process_cpu_seconds,
    running_service,
)

TARGET_RATE = 5_000
TARGET_INDEX = 1_000_000
SURNAMES = (
    Path(__file__).resolve().parents[2]
    / "services/linkage/src/kiban_linkage/domain/matching/data/surnames.tsv"
)
_GIVEN_HEADS = [
    ("健", "ケン"),
    ("大", "ダイ"),
    ("翔", "ショウ"),
    ("美", "ミ"),
    ("陽", "ハル"),
    ("結", "ユイ"),
    ("悠", "ユウ"),
    ("蒼", "アオ"),
    ("真", "マ"),
    ("奈", "ナ"),
    ("一", "イチ"),
    ("恵", "メグ"),
    ("和", "カズ"),
    ("智", "トモ"),
    ("拓", "タク"),
    ("亜", "ア"),
    ("直", "ナオ"),
    ("光", "ミツ"),
    ("秀", "ヒデ"),
    ("千", "チ"),
]
_GIVEN_TAILS = [
    ("太", "タ"),
    ("輔", "スケ"),
    ("斗", "ト"),
    ("子", "コ"),
    ("菜", "ナ"),
    ("人", "ト"),
    ("也", "ヤ"),
    ("美", "ミ"),
    ("希", "キ"),
    ("郎", "ロウ"),
    ("香", "カ"),
    ("樹", "キ"),
    ("平", "ヘイ"),
    ("里", "リ"),
    ("介", "スケ"),
    ("彦", "ヒコ"),
    ("代", "ヨ"),
    ("実", "ミ"),
    ("志", "シ"),
    ("哉", "ヤ"),
]
GIVEN = [(h[0] + t[0], h[1] + t[1]) for h in _GIVEN_HEADS for t in _GIVEN_TAILS]


def _surnames() -> tuple[list[tuple[str, str]], list[float]]:
    names, weights = [], []
    for line in SURNAMES.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or line.startswith("surname\t") or not line.strip():
            continue
        name, kana, count = line.split("\t")[:3]
        names.append((name, kana))
        weights.append(float(count))
    # the long tail of rare surnames: synthetic ones sharing a tenth of the population
    tail = [(f"{h[0]}{t[0]}川", f"{h[1]}{t[1]}カワ") for h in _GIVEN_HEADS for t in _GIVEN_TAILS]
    share = sum(weights) / 9 / len(tail)
    return names + tail, weights + [share] * len(tail)


def people(n: int, rng: random.Random) -> list[dict[str, Any]]:
    surnames, weights = _surnames()
    families = rng.choices(surnames, weights=weights, k=n)
    out = []
    for i, family in enumerate(families):
        given = rng.choice(GIVEN)
        out.append(
            {
                "institution_patient_id": f"B{i}",
                "family_name": family[0],
                "given_name": given[0],
                "family_name_kana": family[1],
                "given_name_kana": given[1],
                "birth_date": f"{rng.randint(1930, 2020)}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}",
                "sex": rng.choice(("male", "female")),
                "postal_code": f"{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}",
                "address": f"東京都{rng.randint(1, 99)}区{rng.randint(1, 9)}-{rng.randint(1, 30)}",
                "insurance_numbers": [f"{rng.randint(10**7, 10**8 - 1)}"],
                "deceased_on": None,
            }
        )
    return out


async def load_index(runtime: Any) -> int:
    """The service's own index load (`kiban_linkage.replica.load_index`: the match index in
    memory, built from the vault); for an A/B run against an older tree (PYTHONPATH to it),
    that tree's `context.load_index` (its cache of normalized identities), or for a tree that
    predates both, the cache filled the same way without the garbage-collector freeze."""
    try:
        from kiban_linkage.replica import load_index as service_load_index
    except ImportError:
        try:
            from kiban_linkage.context import (  # type: ignore[attr-defined,no-redef]
                load_index as service_load_index,
            )
        except ImportError:
            service_load_index = None
    if service_load_index is not None:
        return await service_load_index(runtime)
    ctx: Linkage = runtime.context
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        await ctx.ensure_model(conn)
        rows = (await conn.execute(select(records.c.identity))).all()
    for (token,) in rows:
        ctx.normalized(token)
    return len(rows)


async def add_blocking_keys(conn: Any, digests: list[str], record_ids: list[int]) -> None:
    if hasattr(vault, "add_blocking_key_arrays"):
        await vault.add_blocking_key_arrays(conn, digests, record_ids)
    else:  # a tree that predates it (A/B runs)
        await vault.add_blocking_keys(
            conn, [{"digest": d, "record_id": r} for d, r in zip(digests, record_ids, strict=True)]
        )


def _hiragana(text: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in text)


async def preload(ctx: Linkage, runtime: Any, index: list[dict[str, Any]]) -> None:
    """The index straight into the vault tables (the service's own batch inserts)."""
    now = datetime.now(UTC)
    batch = 10_000
    for start in range(0, len(index), batch):
        chunk = index[start : start + batch]
        person_rows, record_rows, key_digests, key_records = [], [], [], []
        for offset, identity in enumerate(chunk):
            record_id = start + offset + 1
            normalized = normalize(identity_from_mapping(identity))
            token = ctx.seal_identity(identity)
            key = new_person_key()
            person_rows.append(
                {"person_key": key, "pseudonym": ctx.pseudonym(key), "created_at": now}
            )
            record_rows.append(
                {
                    "id": record_id,
                    "record_key": ctx.patient_key("0000000000", identity["institution_patient_id"]),
                    "person_key": key,
                    "institution_code": "0000000000",
                    "identity": token,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            digests = ctx.digests(normalized)
            key_digests.extend(digests)
            key_records.extend([record_id] * len(digests))
        async with runtime.transaction() as tx:
            conn = await tx.session.connection()
            await vault.add_persons(conn, person_rows)
            await conn.execute(insert(records), record_rows)
            await add_blocking_keys(conn, key_digests, key_records)
        if (start // batch) % 10 == 0:
            print(f"  preloaded {start + len(chunk):,} / {len(index):,}", flush=True)
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('linkage_records', 'id'), {len(index)})"
            )
            await conn.exec_driver_sql("ANALYZE")


def stream_events(
    ctx: Linkage, index: list[dict[str, Any]], n: int, rng: random.Random
) -> list[Any]:
    fresh = people(n // 2, random.Random(rng.random()))
    again = []
    for i, identity in enumerate(rng.sample(index, n - len(fresh))):
        changed = {**identity, "institution_patient_id": f"A{i}"}
        changed["family_name_kana"] = _hiragana(identity["family_name_kana"])
        if i % 4 == 0:
            changed["postal_code"] = f"{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
            changed["address"] = None
        again.append(changed)
    for i, identity in enumerate(fresh):
        identity["institution_patient_id"] = f"N{i}"
    identities = fresh + again
    rng.shuffle(identities)
    messages = []
    resources = {
        "resources": [
            {
                "resourceType": "Condition",
                "id": "c1",
                "subject": {"reference": "Patient/x"},
                "code": {"coding": [{"system": "icd10", "code": "I50.0"}]},
            }
        ]
    }
    for i, identity in enumerate(identities):
        institution = "1111111111"
        data = RecordReceivedV1(
            submission_id=f"s{i}",
            institution_code=institution,
            received_at=datetime.now(UTC),
            resource_count=1,
            identity=ctx.cipher.encrypt_json(identity, context=RECORD_RECEIVED_IDENTITY),
            resources=ctx.cipher.encrypt_json(resources, context=RECORD_RECEIVED_RESOURCES),
        )
        key = ctx.patient_key(institution, identity["institution_patient_id"])
        messages.append(
            encode(Event(type=RECORD_RECEIVED, source="/kiban/intake", key=key, data=data))
        )
    return messages


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MB."""
    current = 0.0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    return current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def committed(runtime: Any) -> int:
    """Events whose effects have committed (the runner records them in the same transaction)."""
    async with runtime.engine.connect() as conn:
        result = await conn.exec_driver_sql("SELECT count(*) FROM kiban_processed_events")
        return int(result.scalar_one())


async def database_sizes(runtime: Any) -> str:
    """The vault's footprint on PostgreSQL against its buffer pool ("" on SQLite)."""
    async with runtime.engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            return ""
        row = (
            await conn.exec_driver_sql(
                "SELECT pg_database_size(current_database()), "
                "pg_total_relation_size('linkage_blocking_keys'), "
                "pg_total_relation_size('linkage_records') + "
                "pg_total_relation_size('linkage_persons'), current_setting('shared_buffers')"
            )
        ).one()
    mb = 1024 * 1024
    return (
        f"PostgreSQL: database {row[0] / mb:,.0f} MB, of which blind indexes "
        f"{row[1] / mb:,.0f} MB and records + persons {row[2] / mb:,.0f} MB (indexes "
        f"included); shared_buffers {row[3]}"
    )


async def run(args: argparse.Namespace, database_url: str) -> None:
    rng = random.Random(20261121)
    broker = MemoryBroker()
    with tempfile.TemporaryDirectory() as state:
        settings = embedded_settings(LinkageSettings, Path(state), database_url=database_url)
        async with running_service(create_app, settings, broker=broker, gc_freeze=True) as svc:
            ctx: Linkage = svc.context
            runtime = svc.runtime
            print(f"generating and preloading an index of {args.index:,} records ...", flush=True)
            started = time.perf_counter()
            index = people(args.index, rng)
            await preload(ctx, runtime, index)
            print(f"  preloaded in {time.perf_counter() - started:.0f} s", flush=True)
            # the stream is drawn now and the generated people dropped, so the resident set
            # measured from here on is the service's (plus ~50 MB of encoded events)
            messages = stream_events(ctx, index, args.stream, rng)
            del index
            gc.collect()
            rss, _ = rss_mb()
            print(f"  RSS before the index load: {rss:,.0f} MB", flush=True)
            if not args.cold_cache:
                # what the service does at start (its `index-load` task): the vault's
                # normalized identities into memory, then gc.collect() + gc.freeze()
                started, cpu = time.perf_counter(), time.process_time()
                loaded = await load_index(runtime)
                rss, peak = rss_mb()
                print(
                    f"  index loaded into the service's memory: {loaded:,} records in "
                    f"{time.perf_counter() - started:.0f} s ({time.process_time() - cpu:.0f} s "
                    f"CPU); RSS {rss:,.0f} MB (peak {peak:,.0f} MB, the generation and "
                    "preload included)",
                    flush=True,
                )
            load = os.getloadavg()[0]
            profiler = cProfile.Profile() if args.profile else None
            started, cpu = time.perf_counter(), time.process_time()
            tree = process_cpu_seconds(os.getpid())  # this process and its PostgreSQL, if ours
            if profiler is not None:
                profiler.enable()
            await broker.append(messages)
            while await committed(runtime) < len(messages):  # noqa: ASYNC110 — polls the database
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu
            children = process_cpu_seconds(os.getpid()) - tree - cpu
            if profiler is not None:
                profiler.disable()
                stats_ = pstats.Stats(profiler)
                stats_.sort_stats("tottime").print_stats(40)
                stats_.sort_stats("cumulative").print_stats(60)
            async with runtime.transaction() as tx:
                stats = await vault.stats(await tx.session.connection())
            sizes = await database_sizes(runtime)
            end_load = os.getloadavg()[0]
    rss, peak = rss_mb()
    print(f"RSS after the stream: {rss:,.0f} MB (peak {peak:,.0f} MB)")
    if sizes:
        print(sizes)
    _report(args, messages, stats, elapsed, cpu, children, (load, end_load))


def _report(
    args: argparse.Namespace,
    messages: list[Any],
    stats: dict[str, int],
    elapsed: float,
    cpu: float,
    children: float,
    load: tuple[float, float],
) -> None:
    rate = len(messages) / elapsed
    scaled = "" if args.index >= TARGET_INDEX else f" (index scaled down from {TARGET_INDEX:,})"
    print()
    print(f"index: {args.index:,} records{scaled}; stream: {len(messages):,} events")
    print(
        f"linked after the stream: {stats['records']:,} records, {stats['persons']:,} persons, "
        f"{stats['links']:,} links, {stats['possible_open']:,} possible pairs"
    )
    print(
        f"CPU of this process (consumer, linking, outbox relay; PostgreSQL not counted): "
        f"{cpu:.1f} s = {len(messages) / cpu:,.0f} records per CPU second; "
        f"load average {load[0]:.1f} when the stream started, {load[1]:.1f} when it ended"
    )
    if not args.database_url:
        print(
            f"CPU of the PostgreSQL server (started by this bench): {children:.1f} s; service + "
            f"PostgreSQL: {len(messages) / (cpu + children):,.0f} records per CPU second"
        )
    verdict = "not met" if rate < TARGET_RATE else "met" if not scaled else "met on a smaller index"
    print(
        f"streaming rate: {rate:,.0f} records/s in {elapsed:.1f} s (target >= {TARGET_RATE:,} "
        f"records/s into a {TARGET_INDEX:,}-record index: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=int, default=TARGET_INDEX)
    parser.add_argument("--stream", type=int, default=20_000)
    parser.add_argument("--database-url", default=os.environ.get("KIBAN_TEST_DATABASE_URL"))
    parser.add_argument(
        "--shared-buffers",
        default="3GB",
        help="the bench's PostgreSQL buffer pool (default 3GB, which holds a 1M vault's tables "
        "and indexes as a production server's would; PostgreSQL's own default, 128MB, held a "
        "fraction of them and nearly doubled its CPU per record)",
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="skip loading the index into the service's memory after the preload "
        "(every candidate is then decrypted and normalized on first use)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the stream window (slower; top functions)"
    )
    args = parser.parse_args()
    if args.database_url:
        asyncio.run(run(args, args.database_url))
        return
    with PostgresCluster(server_settings={"shared_buffers": args.shared_buffers}) as cluster:
        url = cluster.create_database("linkage_bench")
        asyncio.run(run(args, url))


if __name__ == "__main__":
    sys.exit(main())
