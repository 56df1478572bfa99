"""Bench: the release service on a large dataset, over real HTTP (uvicorn on loopback).

Measures, on the embedded default (SQLite, in-process bus) or PostgreSQL (`--postgres`):
  - ready time: `dataset-built` → `ready` (SHA-256 of every file, `person_id` index, manifest);
  - download throughput of the largest file, streamed to the applicant and logged;
  - trace time: a 50-row leaked sample, and the full file, back to its release and recipient.
Targets (set for this service): ready ≤ 30 s for 1M rows; download ≥ 100 MB/s on loopback;
a 50-row trace ≤ 0.5 s with 10 other releases indexed.

    uv run python bench/release/run.py [--persons 250000] [--other-releases 10] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import random
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_common.devstate import dev_issuer
from kiban_common.events import (
    APPLICATION_DECIDED,
    DATASET_BUILT,
    ApplicationDecidedV1,
    BuiltFile,
    DatasetBuiltV1,
    DatasetSpec,
    Event,
    PrivacySummary,
    encode,
)
from kiban_release.consumers.decisions import release_id_for
from kiban_release.main import create_app
from kiban_release.settings import ReleaseSettings
from kiban_release.tracing import trace_with_url
from kiban_testing import PostgresCluster, embedded_settings, free_port

RESEARCHER = "researcher:bench"


def write_files(directory: Path, persons: int, seed: int) -> dict[str, tuple[Path, int]]:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    ids = [f"{rng.getrandbits(64):016x}" for _ in range(persons)]
    out: dict[str, tuple[Path, int]] = {}
    p = directory / "patients.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["person_id", "sex", "age_band", "prefecture"])
        w.writerows([pid, rng.choice("MF"), f"{rng.randrange(2, 9)}0-", "13"] for pid in ids)
    out["patients.csv"] = (p, persons)
    c = directory / "conditions.csv"
    rows = 0
    with c.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["person_id", "code", "onset_year", "encounter_class"])
        for pid in ids:
            for _ in range(3):
                w.writerow(
                    [pid, rng.choice(["I50.0", "I10", "E11.9"]), rng.randint(2015, 2024), "AMB"]
                )
                rows += 1
    out["conditions.csv"] = (c, rows)
    return out


async def publish(transport: MemoryTransport, event: Event[Any]) -> None:
    await transport.send([encode(event)])


async def build_release(
    transport: MemoryTransport,
    client: httpx.AsyncClient,
    token: str,
    files_dir: Path,
    persons: int,
    seed: int,
) -> tuple[str, dict[str, tuple[Path, int]], float]:
    application = f"bench-{seed}-{secrets.token_hex(3)}"
    decision = Event(
        type=APPLICATION_DECIDED,
        source="/bench",
        key=application,
        data=ApplicationDecidedV1(
            application_id=application,
            decision="approved",
            decided_at=datetime.now(UTC),
            organization="Bench",
            user_category="academia",
            dataset=DatasetSpec(kind="anonymized", resources=["Patient", "Condition"]),
            applicant=RESEARCHER,
        ),
    )
    release_id = release_id_for(decision.id)
    files = write_files(files_dir / release_id, persons, seed)
    await publish(transport, decision)
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        if (await client.get(f"/v1/releases/{release_id}", headers=headers)).status_code == 200:
            break
        await asyncio.sleep(0.05)
    built = DatasetBuiltV1(
        release_id=release_id,
        build_id="bench",
        status="ready",
        files=[
            BuiltFile(
                name=n, rows=r, sha256=hashlib.sha256(p.read_bytes()).hexdigest(), uri=p.as_uri()
            )
            for n, (p, r) in files.items()
        ],
        privacy=PrivacySummary(k=5, achieved_k=5, suppressed=0),
    )
    started = time.perf_counter()
    await publish(transport, Event(type=DATASET_BUILT, source="/bench", key=release_id, data=built))
    while True:
        status = (await client.get(f"/v1/releases/{release_id}", headers=headers)).json()["status"]
        if status != "building":
            break
        await asyncio.sleep(0.02)
    assert status == "ready", status
    return release_id, files, time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        state = Path(tmp)
        overrides: dict[str, Any] = {
            "release": {"download_limit": 1000, "chunk_bytes": args.chunk_kib * 1024}
        }
        if args.postgres:
            cluster = stack.enter_context(PostgresCluster())
            overrides["database_url"] = cluster.create_database("release_bench")
        settings = embedded_settings(ReleaseSettings, state, **overrides)
        assert isinstance(settings, ReleaseSettings)
        broker = MemoryBroker()
        transport = MemoryTransport(broker)
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings, broker=broker),
                host="127.0.0.1",
                port=port,
                log_level="warning",
                log_config=None,
            )
        )
        serving = asyncio.create_task(server.serve())
        while True:
            if server.started:
                break
            await asyncio.sleep(0.05)
        token = dev_issuer(state).mint(RESEARCHER, ["release:download"], ttl_seconds=3600)
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=120
            ) as client:
                for n in range(args.other_releases):
                    await build_release(
                        transport, client, token, settings.files_dir, args.persons // 10, 1000 + n
                    )
                release_id, files, ready_s = await build_release(
                    transport, client, token, settings.files_dir, args.persons, 1
                )
                total_rows = sum(r for _, r in files.values())
                total_bytes = sum(p.stat().st_size for p, _ in files.values())
                print(
                    f"dataset: {total_rows:,} rows in 2 files, {total_bytes / 1e6:.1f} MB, "
                    f"{args.persons:,} person ids; {args.other_releases} other releases indexed"
                )
                print(
                    f"ready after dataset-built:   {ready_s:6.2f} s "
                    f"({total_rows / ready_s:,.0f} rows/s)   target ≤ 30 s per 1M rows"
                )

                path, _ = files["conditions.csv"]
                url = f"http://127.0.0.1:{port}/v1/releases/{release_id}/files/conditions.csv"
                # curl in its own process, as a recipient's client would be
                curl = await asyncio.create_subprocess_exec(
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{size_download} %{time_total}",
                    "-H",
                    f"Authorization: Bearer {token}",
                    url,
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await curl.communicate()
                size, took = out.decode().split()
                received = int(size)
                assert received == path.stat().st_size, (received, curl.returncode)
                print(
                    f"download conditions.csv:     {float(took):6.2f} s "
                    f"({received / float(took) / 1e6:,.0f} MB/s)   target ≥ 100 MB/s"
                )

                lines = path.read_text().splitlines()
                sample = state / "leak.csv"
                sample.write_text(
                    "\n".join([lines[0], *random.Random(5).sample(lines[1:], 50)]) + "\n"
                )
                for label, target in (("50-row sample", sample), ("full file", path)):
                    started = time.perf_counter()
                    result = await trace_with_url(settings.database_url, target)
                    took = time.perf_counter() - started
                    assert result.release_id == release_id
                    assert result.recipient == RESEARCHER
                    print(
                        f"trace {label:<21} {took:6.2f} s  verdict={result.verdict.value}"
                        + ("   target ≤ 0.5 s" if label.startswith("50") else "")
                    )
        finally:
            server.should_exit = True
            await serving


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--persons", type=int, default=250_000)
    parser.add_argument("--other-releases", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--chunk-kib", type=int, default=256)
    asyncio.run(main(parser.parse_args()))
