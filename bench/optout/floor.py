"""Bench: the floor under issue 4's throughput target — what the fixed stack costs per request
before Kiban adds anything, measured in the same run as the optout service.

Three servers run one after another as their own uvicorn process (one worker, uvloop and
httptools as `kiban serve` uses them) and are driven by the same client as `run.py` (httpx,
32 concurrent, HTTP over TCP):

1. `bare`: a FastAPI route that validates the optout body with pydantic and answers 202;
2. `one-insert`: the same, plus one row committed to PostgreSQL through SQLAlchemy's async engine
   (BEGIN, INSERT, COMMIT: the least a durable acceptance can cost);
3. `optout`: the optout service (`run.py`'s settings: Kafka, outbox, audit, encryption).

For each it prints the server's CPU time per request, read from /proc, and the rate two
dedicated cores would sustain at that cost (2 / CPU per request). The machine is shared with
the client, PostgreSQL and Kafka, so wall-clock rates here understate what two cores of its own
give a server; CPU per request does not depend on that share.

    uv run python bench/optout/floor.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import uvloop
from pydantic import BaseModel
from run import (
    Client,
    free_port,
    full_load,
    infrastructure,
    run_uvicorn,
    serve,
    wait_ready,
)

from kiban_testing import process_cpu_seconds


class Body(BaseModel):
    action: str
    subject: dict[str, Any]


def floor_app() -> Any:
    """The `bare` or `one-insert` floor app (uvicorn imports it by name in its process)."""
    from fastapi import FastAPI
    from sqlalchemy import Column, MetaData, String, Table, insert

    from kiban_common.db import create_engine

    app = FastAPI()
    database = os.environ.get("FLOOR_DATABASE_URL")
    engine = create_engine(database, pool_size=20) if database else None
    rows = Table("floor", MetaData(), Column("id", String, primary_key=True), Column("v", String))

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/optouts", status_code=202)
    async def post(body: Body) -> dict[str, str]:
        optout_id = secrets.token_hex(16)
        if engine is not None:
            async with engine.begin() as conn:
                await conn.execute(insert(rows).values(id=optout_id, v=body.action))
        return {"optout_id": optout_id}

    return app


def serve_floor(port: int, database: str | None) -> None:
    if database:
        os.environ["FLOOR_DATABASE_URL"] = database
    run_uvicorn("floor:floor_app", port)


async def measure(name: str, process: Any, port: int, state: Path, requests: int) -> float:
    base = f"http://127.0.0.1:{port}"
    process.start()
    client = Client(base, state)
    try:
        await wait_ready(base)
        await full_load(client, 200, 8)
        before = process_cpu_seconds(process.pid or 0)
        rate, _ = await full_load(client, requests, 32)
        cpu_ms = (process_cpu_seconds(process.pid or 0) - before) / requests * 1000
    finally:
        await client.close()
        process.terminate()
        process.join(30)
    print(
        f"{name:11s} server CPU {cpu_ms:5.2f} ms/request → {2000 / cpu_ms:6.0f}/s on 2 dedicated "
        f"cores ({rate:.0f}/s wall here, shared)",
        flush=True,
    )
    return cpu_ms


async def main(args: argparse.Namespace) -> None:
    spawn = mp.get_context("spawn")
    with infrastructure() as (bootstrap, pg), tempfile.TemporaryDirectory() as state:
        from kiban_common.devstate import dev_issuer

        dev_issuer(Path(state))
        floor_db = pg.create_database(f"floor_{secrets.token_hex(3)}")
        from sqlalchemy import text

        from kiban_common.db import create_engine

        setup = create_engine(floor_db)
        async with setup.begin() as conn:
            await conn.execute(text("CREATE TABLE floor (id text PRIMARY KEY, v text)"))
        await setup.dispose()
        runs = {
            "bare": (serve_floor, (None,)),
            "one-insert": (serve_floor, (floor_db,)),
            "optout": (
                serve,
                (state, pg.create_database(f"optout_{secrets.token_hex(3)}"), bootstrap),
            ),
        }
        costs = {}
        for name, (target, extra) in runs.items():
            port = free_port()
            args_ = (*extra, port, True, 1) if target is serve else (port, *extra)
            costs[name] = await measure(
                name, spawn.Process(target=target, args=args_), port, Path(state), args.requests
            )
            await asyncio.sleep(1)
    print()
    print(
        f"target ≥ 1,000/s on 2 cores needs ≤ 2.00 ms of server CPU per request; the stack's "
        f"floor for a durable acceptance is {costs['one-insert']:.2f} ms, the optout service "
        f"{costs['optout']:.2f} ms ({costs['optout'] / costs['one-insert']:.1f}× the floor)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    uvloop.run(main(parser.parse_args()))  # the same loop as the server: a leaner client
