"""Bench: the intake service end to end on PostgreSQL + a real Kafka broker (issue 3).

The service runs as its own process (`uvicorn kiban_intake.main:create_app --factory`, settings
from `KIBAN_*` variables as in production); this process is the hospitals' EHR clients (a lean
keep-alive HTTP client) and mints their tokens with the development issuer. Accepted records go
through the outbox to Kafka while the clients post. Prints each figure next to its target:

  - sustained resources/s, bundles of 100 resources, 16 concurrent clients (≥ 5,000 on 2 cores)
  - p50 / p99 latency, bundles of 20 resources, 50 concurrent clients (p99 < 250 ms)
  - an NDJSON bulk upload of 1,000,000 resources, streamed: time and the server's peak RSS
    (< 400 MB; memory does not grow with the size, the body is streamed)

and, to explain the figures, the server's CPU time per resource in each phase and how many
cores the server and the clients kept busy (the machine is shared: a starved server shows
as low busy cores with high latency).

    uv run python bench/intake/run.py [--seconds 20] [--bulk-resources 1000000] [--workers 2]
        [--profile PATH]   # cProfile the server (use with --workers 1)

Two uvicorn workers by default (one per core); the service keeps all state in the database
(held records are taken with SKIP LOCKED, the outbox relay locks its batch, the audit chain
takes an advisory lock), so workers need nothing in common.

Starts Kafka and PostgreSQL with the test harness (or uses KIBAN_TEST_KAFKA_BOOTSTRAP /
KIBAN_TEST_DATABASE_URL when set). All data is synthetic (fixed seed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvloop

from kiban_common.db import create_engine, migrate
from kiban_common.devstate import dev_crypto, dev_issuer
from kiban_common.events import Zone
from kiban_testing import KafkaBroker, PostgresCluster, process_cpu_seconds
from kiban_testing.loadgen import LoadClient

CODE = "1399999999"
JP_ID = f"urn:oid:1.2.392.100495.20.3.51.1{CODE}"
REP = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
NOTIFIED = (date.today() - timedelta(days=60)).isoformat()
KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノ"
KANJI = "山田佐藤鈴木高橋田中伊藤渡辺中村小林加藤吉田松本井上木村林清水"


def patient(pid: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": JP_ID, "value": pid},
                       {"system": "urn:oid:1.2.392.100495.20.3.61", "value": f"{n:08d}"}],
        "name": [
            {"extension": [{"url": REP, "valueCode": "IDE"}], "use": "official",
             "family": KANJI[n % 30] + KANJI[(n // 30) % 30], "given": [KANJI[(n // 7) % 30]]},
            {"extension": [{"url": REP, "valueCode": "SYL"}], "use": "official",
             "family": KANA[n % 25] + KANA[(n // 25) % 25], "given": [KANA[(n // 5) % 25]]},
        ],
        "gender": ("male", "female")[n % 2],
        "birthDate": f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        "address": [{"postalCode": f"{100 + n % 800:03d}-{n % 10000:04d}"}],
    }  # fmt: skip


def observation(pid: str, i: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"2025-0{1 + i % 9}-1{i % 10}T10:00:00+09:00",
        "valueQuantity": {"value": 60 + i % 40, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
    }  # fmt: skip


def bundle_bytes(pids: list[str], per_patient: int, seq: int) -> bytes:
    entries: list[dict[str, Any]] = []
    for k, pid in enumerate(pids):
        entries.append({"resource": patient(pid, seq * 10 + k)})
        entries.extend({"resource": observation(pid, i)} for i in range(per_patient - 1))
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": entries}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, Any]]:
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KIBAN_TEST_KAFKA_BOOTSTRAP")
        if not bootstrap:
            bootstrap = stack.enter_context(KafkaBroker()).bootstrap
        pg = stack.enter_context(PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")))
        yield bootstrap, pg


def peak_rss_mb(pid: int) -> float:
    """Largest VmHWM of the process and its children (uvicorn workers), in MB."""
    peak = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                stack.extend(int(c) for c in children)
    return peak / 1024


@contextlib.asynccontextmanager
async def server(
    state: Path, url: str, bootstrap: str, workers: int, profile: str | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    crypto = dev_crypto(state, Zone.CORE)
    dev_issuer(state)
    port = free_port()
    env = {
        **os.environ,
        "KIBAN_DATABASE_URL": url,
        "KIBAN_BUS": "kafka",
        "KIBAN_KAFKA_BOOTSTRAP": bootstrap,
        "KIBAN_AUTH__ISSUER": "kiban-dev",
        "KIBAN_AUTH__JWKS_FILE": str(state / "dev-jwks.json"),
        "KIBAN_CRYPTO__KEYS_FILE": str(crypto.keys_file),
        "KIBAN_CRYPTO__SEALING_PUBLIC_KEY_FILE": str(crypto.sealing_public_key_file),
        "KIBAN_CRYPTO__SEALING_PRIVATE_KEY_FILE": str(crypto.sealing_private_key_file),
        "KIBAN_HTTP__PORT": str(port),
        "KIBAN_STATE_DIR": str(state),
    }
    engine = create_engine(url)
    await migrate(engine, "kiban_intake.store:migrations")
    await engine.dispose()
    # --profile: the server under cProfile (one worker), stats written at shutdown.
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    cmd = [sys.executable, *prof, "-m", "uvicorn", "kiban_intake.main:create_app", "--factory",
           "--port", str(port), "--workers", str(workers), "--log-level", "warning",
           "--no-access-log", "--timeout-keep-alive", "60"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)  # noqa: ASYNC220 — started once, before timing
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(600):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the intake service did not become ready")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def notices(client: httpx.AsyncClient, headers: dict[str, str], pids: list[str]) -> None:
    for i in range(0, len(pids), 5000):
        body = {"notices": [{"patient_id": p, "notified_on": NOTIFIED, "method": "written"}
                            for p in pids[i : i + 5000]]}  # fmt: skip
        r = await client.post("/v1/notices", json=body, headers=headers, timeout=120)
        r.raise_for_status()


async def load(
    base: str,
    tokens: list[dict[str, str]],
    clients: int,
    seconds: float,
    patients_per_bundle: int,
    per_patient: int,
    prefix: str,
) -> tuple[int, float, list[float], int]:
    """`clients` concurrent posters for `seconds`: (resources, elapsed, latencies, errors).

    Each client is one EHR connection with its own token (the per-caller rate limit is not
    what is measured); its request bodies are built before the clock starts (16 distinct
    bundles per client, cycled) so the load generator spends its CPU on HTTP, not JSON."""
    pool = [f"{prefix}{i}" for i in range(clients * 64)]
    bodies = [
        [
            bundle_bytes(
                pool[c * 64 + (seq * patients_per_bundle) % 64 :][:patients_per_bundle],
                per_patient,
                seq,
            )
            for seq in range(16)
        ]
        for c in range(clients)
    ]
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        await notices(client, tokens[0], pool)
    url = httpx.URL(base)
    # The lean bench client (kiban_testing.loadgen): httpx cost as much CPU per request as the
    # server on these two shared cores.
    client = LoadClient(url.host, url.port or 80, connections=clients)
    try:
        done = 0
        errors = 0
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def poster(c: int) -> None:
            nonlocal done, errors
            seq = 0
            headers = tokens[c % len(tokens)]
            while time.perf_counter() < deadline:
                body = bodies[c][seq % 16]
                seq += 1
                t0 = time.perf_counter()
                status, reply = await client.request(
                    "POST", "/v1/bundles", body=body, headers=headers
                )
                latencies.append(time.perf_counter() - t0)
                accepted = status == 202 and json.loads(reply)["counts"]["accepted"]
                if accepted == patients_per_bundle:
                    done += patients_per_bundle * per_patient
                else:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(poster(c) for c in range(clients)))
        return done, time.perf_counter() - started, latencies, errors
    finally:
        await client.close()


async def bulk(base: str, headers: dict[str, str], resources: int) -> tuple[float, dict[str, Any]]:
    per_patient = 100
    pids = [f"B{i}" for i in range((resources + per_patient - 1) // per_patient)]

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        chunk: list[str] = []
        for n, pid in enumerate(pids):
            lines = [json.dumps(patient(pid, n))]
            lines.extend(json.dumps(observation(pid, i)) for i in range(per_patient - 1))
            for line in lines:
                if sent >= resources:
                    break
                chunk.append(line)
                sent += 1
            if len(chunk) >= 2000 or sent >= resources:
                yield ("\n".join(chunk) + "\n").encode()
                chunk = []
            if sent >= resources:
                break

    async with httpx.AsyncClient(base_url=base, timeout=1800) as client:
        await notices(client, headers, pids)
        started = time.perf_counter()
        ndjson = {**headers, "Content-Type": "application/fhir+ndjson"}
        r = await client.post("/v1/bulk", content=body(), headers=ndjson)
        elapsed = time.perf_counter() - started
        r.raise_for_status()
        return elapsed, r.json()


async def main(args: argparse.Namespace) -> None:
    with infrastructure() as (bootstrap, pg), tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        url = pg.create_database(f"intake_bench_{secrets.token_hex(3)}")
        issuer = dev_issuer(state)
        admin_token = issuer.mint("operator:bench", ["admin"], None, ttl_seconds=7200)
        admin = {"Authorization": f"Bearer {admin_token}"}
        tokens = [
            {
                "Authorization": "Bearer "
                + issuer.mint(f"institution:{CODE}", ["intake:submit"], None, ttl_seconds=7200)
            }
            for _ in range(50)
        ]
        inst = tokens[0]
        async with server(state, url, bootstrap, args.workers, args.profile) as (base, proc):
            async with httpx.AsyncClient(base_url=base) as client:
                institution = {"code": CODE, "name": "Bench", "kind": "hospital"}
                r = await client.post("/v1/institutions", headers=admin, json=institution)
                r.raise_for_status()
            print(
                "warm-up and throughput: bundles of 100 resources, 16 clients, "
                f"{args.seconds:.0f} s ...",
                flush=True,
            )
            await load(base, tokens, 16, 3, 4, 25, "W")
            cpu0, me0 = process_cpu_seconds(proc.pid), time.process_time()
            done, elapsed, _, errors = await load(base, tokens, 16, args.seconds, 4, 25, "T")
            cpu_t, me_t = process_cpu_seconds(proc.pid) - cpu0, time.process_time() - me0
            rate = done / elapsed
            print(
                f"latency: bundles of 20 resources, 50 clients, {args.seconds:.0f} s ...",
                flush=True,
            )
            cpu0, me0 = process_cpu_seconds(proc.pid), time.process_time()
            lat_done, lat_s, latencies, lat_errors = await load(
                base, tokens, 50, args.seconds, 1, 20, "L"
            )
            cpu_l, me_l = process_cpu_seconds(proc.pid) - cpu0, time.process_time() - me0
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            print(f"bulk: {args.bulk_resources:,} resources as streamed NDJSON ...", flush=True)
            cpu0 = process_cpu_seconds(proc.pid)
            bulk_s, outcome = await bulk(base, inst, args.bulk_resources)
            cpu_b = process_cpu_seconds(proc.pid) - cpu0
            rss = peak_rss_mb(proc.pid)
        kept = outcome["resources"]["kept"]
        print()
        print(f"{'figure':<58} {'measured':>18}   target")
        print(
            f"{'resources/s, 100-resource bundles, 16 clients':<58} {rate:>18,.0f}   >= 5,000"
            f"{'  (met)' if rate >= 5000 else '  (NOT met)'}   [{errors} failed requests]"
        )
        print(f"{'latency p50, 20-resource bundles, 50 clients (ms)':<58} {p50:>18.1f}   -")
        print(
            f"{'latency p99, 20-resource bundles, 50 clients (ms)':<58} {p99:>18.1f}   < 250"
            f"{'  (met)' if p99 < 250 else '  (NOT met)'}   "
            f"[{len(latencies)} requests, {lat_errors} failed]"
        )
        print(f"{'latency phase: resources/s':<58} {lat_done / lat_s:>18,.0f}")
        print(
            f"{'server CPU µs per resource: throughput / latency / bulk':<58} "
            f"{cpu_t / max(done, 1) * 1e6:>6.0f} / {cpu_l / max(lat_done, 1) * 1e6:.0f} / "
            f"{cpu_b / max(kept, 1) * 1e6:.0f}"
        )
        print(
            f"{'CPU busy (server, clients) in throughput / latency phase':<58} "
            f"{cpu_t / elapsed:>6.2f}, {me_t / elapsed:.2f} / {cpu_l / lat_s:.2f}, "
            f"{me_l / lat_s:.2f} cores"
        )
        print(f"{'bulk NDJSON: resources kept / lines':<58} {kept:>9,} / {outcome['lines']:,}")
        print(f"{'bulk NDJSON: time (s), resources/s':<58} {bulk_s:>9.1f} / {kept / bulk_s:,.0f}")
        print(f"{'server peak RSS over the whole run (MB)':<58} {rss:>18.0f}   < 400"
              f"{'  (met)' if rss < 400 else '  (NOT met)'}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--bulk-resources", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", metavar="PATH", help="cProfile the server (1 worker) to PATH")
    uvloop.run(main(parser.parse_args()))  # the server's loop too: a leaner client
