"""Key rotation throughput: `rotate_keys` re-encrypting a table of identity-sized tokens, on
SQLite and PostgreSQL, against the bare re-encryption (decrypt + encrypt, no database) as the
baseline measured in the same run.

    uv run python bench/keys/run.py [--rows 20000] [--batch-size 500]

Prints, per backend: rows per second (wall), CPU seconds per 1,000 rows (this process: the
database server's CPU is not counted), and the share of the wall time that is the bare crypto.
The machine's load average is printed with the figures (they are noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import tempfile
import time
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, Table, Text, insert

from kiban_common.crypto import EncryptedColumn, FieldCipher, Keyring, rotate_keys
from kiban_common.db import create_engine, shared_tables
from kiban_testing import PostgresCluster

CONTEXT = "bench.keys.identity"
OLD = FieldCipher(Keyring({"k1": bytes(range(32))}, "k1"))
NEW = FieldCipher(Keyring({"k1": bytes(range(32)), "k2": bytes(range(32, 64))}, "k2"))


def identity(rng: random.Random) -> dict[str, object]:
    """A synthetic identity the size of intake's (about 300 bytes of JSON)."""
    return {
        "institution_patient_id": f"P{rng.randrange(10**8):08d}",
        "family_name": "試験" * rng.randint(1, 2),
        "given_name": "花子",
        "family_name_kana": "シケン",
        "given_name_kana": "ハナコ",
        "birth_date": f"19{rng.randint(30, 99)}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}",
        "sex": rng.choice(["male", "female"]),
        "postal_code": f"{rng.randrange(10**7):07d}",
        "address": "東京都千代田区千代田1-1 (synthetic)",
        "insurance_numbers": [f"{rng.randrange(10**8):08d}"],
        "deceased_on": None,
    }


def schema() -> tuple[MetaData, Table]:
    metadata = MetaData()
    shared_tables(metadata)
    table = Table(
        "bench_vault",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("identity", Text, nullable=False),
    )
    return metadata, table


async def one_backend(url: str, tokens: list[str], batch_size: int) -> dict[str, float]:
    metadata, table = schema()
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            for start in range(0, len(tokens), 5000):
                await connection.execute(
                    insert(table),
                    [
                        {"id": i, "identity": t}
                        for i, t in enumerate(tokens[start : start + 5000], start)
                    ],
                )
        wall, cpu = time.perf_counter(), time.process_time()
        report = await rotate_keys(
            engine,
            metadata,
            [EncryptedColumn("bench_vault", "identity", CONTEXT)],
            NEW,
            batch_size=batch_size,
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        assert report.ok
        assert report.columns[0].rotated == len(tokens)
    finally:
        await engine.dispose()
    return {"wall": wall, "cpu": cpu}


def bare_crypto(tokens: list[str]) -> float:
    started = time.process_time()
    for token in tokens:
        NEW.encrypt(NEW.decrypt(token, context=CONTEXT), context=CONTEXT)
    return time.process_time() - started


async def main(rows: int, batch_size: int) -> None:
    rng = random.Random(20261121)
    tokens = [
        OLD.encrypt(json.dumps(identity(rng), ensure_ascii=False), context=CONTEXT)
        for _ in range(rows)
    ]
    crypto = bare_crypto(tokens)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
    print(f"{rows} rows, batches of {batch_size}")
    print(f"  bare decrypt+encrypt: {crypto / rows * 1000:.3f} CPU s per 1,000 rows")
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(PostgresCluster(url=os.environ.get("KIBAN_TEST_DATABASE_URL")))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        backends = {
            "sqlite": f"sqlite:///{tmp}/bench.db",
            "postgresql": pg.create_database(f"bench_keys_{secrets.token_hex(3)}"),
        }
        for name, url in backends.items():
            got = await one_backend(url, tokens, batch_size)
            print(
                f"  {name:<10}: {rows / got['wall']:,.0f} rows/s wall, "
                f"{got['cpu'] / rows * 1000:.3f} CPU s per 1,000 rows (this process), "
                f"bare crypto = {crypto / got['wall']:.0%} of the wall time; "
                f"load {os.getloadavg()[0]:.2f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.batch_size))
