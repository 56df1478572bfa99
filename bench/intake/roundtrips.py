"""Bench: PostgreSQL round trips per bundle, and who asks for them (intake or kiban_common).

On a shared 2-core machine a round trip to PostgreSQL costs more than the statement: the
`send()` wakes the backend, the kernel runs TCP loopback and often switches to the backend
before the service goes on (a py-spy profile of the bench server puts about a quarter of its
samples in `_SelectorSocketTransport.write`). This counts, for the bench's bundles posted to
the real app (ASGI, in-process bus, a real PostgreSQL), every message the service writes to
the database socket, grouped by the innermost kiban frame that caused it and by what it was.

It also prints the CPU time of the whole process (service + ASGI client, no HTTP server)
per request, one request at a time: a figure that holds on a loaded machine.

    uv run python bench/intake/roundtrips.py [--bundles 20] [--rounds 5] [--profile PATH]

Uses KIBAN_TEST_DATABASE_URL when set, else starts a throwaway PostgreSQL (kiban_testing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import os
import secrets
import statistics
import sys
import tempfile
import time
import traceback
from asyncio import selector_events
from pathlib import Path
from typing import Any

from kiban_common.bus import MemoryBroker
from kiban_intake.main import create_app
from kiban_intake.settings import IntakeSettings
from kiban_testing import PostgresCluster, embedded_settings, running_service

sys.path.insert(0, str(Path(__file__).parent))
from run import CODE, NOTIFIED, bundle_bytes

_counts: collections.Counter[str] = collections.Counter()
_counting = False


def _origin() -> str:
    """`<kiban function> → <driver step>` for the current write."""
    frames = traceback.extract_stack()[:-3]
    kiban = next(
        (f for f in reversed(frames) if "/kiban_" in f.filename and "/bench/" not in f.filename),
        None,
    )
    step = "?"
    for f in reversed(frames):
        if f.name in ("_async_ping", "_start_transaction", "_call_and_discard", "_prepare"):
            step = f.name
            break
        if f.name in ("_executemany", "_prepare_and_execute", "_reset"):
            step = f.name
    where = "-"
    if kiban is not None:
        package = kiban.filename.split("/src/")[-1].split("/")[0]
        where = f"{package}:{Path(kiban.filename).stem}.{kiban.name}"
    return f"{where:<58} {step}"


def _patch() -> None:
    write, writelines = (
        selector_events._SelectorSocketTransport.write,
        selector_events._SelectorSocketTransport.writelines,
    )

    def counted_write(self: Any, data: Any) -> None:
        if _counting:
            _counts[_origin()] += 1
        write(self, data)

    def counted_writelines(self: Any, data: Any) -> None:
        if _counting:
            _counts[_origin()] += 1
        writelines(self, data)

    selector_events._SelectorSocketTransport.write = counted_write  # type: ignore[method-assign]
    selector_events._SelectorSocketTransport.writelines = counted_writelines  # type: ignore[method-assign]


async def main(args: argparse.Namespace) -> None:
    global _counting
    with (
        PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")) as pg,
        tempfile.TemporaryDirectory() as tmp,
    ):
        url = pg.create_database(f"intake_rt_{secrets.token_hex(3)}")
        settings = embedded_settings(IntakeSettings, Path(tmp), database_url=url)
        _patch()
        async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
            admin = svc.auth("operator:bench", ["admin"])
            inst = svc.auth(f"institution:{CODE}", ["intake:submit"])
            body = {"code": CODE, "name": "Bench", "kind": "hospital"}
            (await svc.client.post("/v1/institutions", json=body, headers=admin)).raise_for_status()
            for label, patients, per_patient in (("100-resource", 4, 25), ("20-resource", 1, 20)):
                pids = [f"{label}-{i}" for i in range(args.bundles * patients)]
                notices = [
                    {"patient_id": p, "notified_on": NOTIFIED, "method": "written"} for p in pids
                ]
                r = await svc.client.post("/v1/notices", json={"notices": notices}, headers=inst)
                r.raise_for_status()
                bodies = [
                    bundle_bytes(pids[i * patients : (i + 1) * patients], per_patient, i)
                    for i in range(args.bundles)
                ]
                for rounds, kind in ((1, "first time"), (2, "seen before")):
                    _counts.clear()
                    _counting = True
                    for b in bodies:
                        r = await svc.client.post("/v1/bundles", content=b, headers=inst)
                        assert r.status_code == 202, r.status_code
                    _counting = False
                    await asyncio.sleep(0.2)
                    total = sum(_counts.values())
                    print(
                        f"{label} bundles, patients {kind} (round {rounds}): "
                        f"{total / len(bodies):.1f} writes to PostgreSQL per request"
                    )
                    for origin, n in _counts.most_common():
                        print(f"  {n / len(bodies):5.1f}  {origin}")
                # CPU per request (patients seen before, one request at a time, relay included)
                cpu = []
                profiler = cProfile.Profile(time.process_time) if args.profile else None
                if profiler is not None:
                    profiler.enable()
                for _ in range(args.rounds):
                    t0 = time.process_time()
                    for b in bodies:
                        r = await svc.client.post("/v1/bundles", content=b, headers=inst)
                        assert r.status_code == 202, r.status_code
                    await asyncio.sleep(0.05)
                    cpu.append((time.process_time() - t0) / len(bodies) * 1000)
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(f"{args.profile}.{label}")
                print(
                    f"{label} bundles: CPU of the whole process per request, ms "
                    f"(best / median of {args.rounds}): {min(cpu):.2f} / "
                    f"{statistics.median(cpu):.2f}"
                )
            # The floor every request pays (auth, rate limit, access monitor, request audit,
            # ASGI): a GET of a submission, one SELECT of intake's own.
            submission = r.json()["submission_id"]
            cpu = []
            for _ in range(args.rounds):
                t0 = time.process_time()
                for _ in range(args.bundles):
                    got = await svc.client.get(f"/v1/submissions/{submission}", headers=inst)
                    assert got.status_code == 200, got.status_code
                await asyncio.sleep(0.05)
                cpu.append((time.process_time() - t0) / args.bundles * 1000)
            print(
                "GET /v1/submissions/{id} (the shared floor): CPU per request, ms "
                f"(best / median of {args.rounds}): {min(cpu):.2f} / {statistics.median(cpu):.2f}"
            )
            with contextlib.suppress(Exception):
                await svc.runtime.engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--profile", metavar="PATH", help="cProfile (CPU time) the timed rounds to PATH.<label>"
    )
    asyncio.run(main(parser.parse_args()))
