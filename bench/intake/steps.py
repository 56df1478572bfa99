"""Bench: intake's own CPU per bundle, step by step, without a server or a database.

The end-to-end bench (`run.py`) measures everything a request costs: the shared path in
`kiban_common` (audit, access monitor, token, rate limit, transaction), SQLAlchemy / asyncpg,
uvicorn. This one isolates what intake's own code spends on the bench's bundles (the same
bodies as `run.py`): JSON parsing, FHIR validation and grouping, patient keys and identity
digests, encryption of rows and event fields, the outbox event building, the request hash.
CPU time (`time.process_time`), best of several rounds, so it holds on a shared machine.

    uv run python bench/intake/steps.py [--rounds 7] [--bundles 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kiban_common.devstate import dev_crypto
from kiban_common.events import REGISTRY, Zone
from kiban_common.outbox import OutboxWriter
from kiban_common.service import ServiceCrypto
from kiban_common.settings import load_settings
from kiban_intake.domain.fhir import parse_bundle, parse_json
from kiban_intake.intake import Intake
from kiban_intake.settings import IntakeSettings
from kiban_intake.store.tables import metadata

sys.path.insert(0, str(Path(__file__).parent))
from run import CODE, bundle_bytes


class _Runtime:
    def __init__(self, settings: IntakeSettings) -> None:
        self.settings = settings
        self.crypto = ServiceCrypto(settings.crypto)


class _Tx:
    def __init__(self, outbox: OutboxWriter) -> None:
        self.outbox = outbox
        self.rows: list[dict[str, Any]] = []

    async def emit(self, event: Any) -> None:
        self.rows.append(self.outbox.row(event))


def best(rounds: int, fn: Callable[[], object]) -> float:
    """Least CPU seconds of `rounds` runs of `fn` (results dropped as they come, as a server
    does, so the collector does not walk hundreds of parsed bundles kept alive)."""
    times = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def each(items: list[Any], fn: Callable[[Any], object]) -> Callable[[], None]:
    def run() -> None:
        for item in items:
            fn(item)

    return run


def measure(
    intake: Intake, outbox: OutboxWriter, patients: int, per_patient: int, args: Any
) -> None:
    bodies = [
        bundle_bytes([f"P{s}-{k}" for k in range(patients)], per_patient, s)
        for s in range(args.bundles)
    ]
    docs = [parse_json(b) for b in bodies]
    parsed = [parse_bundle(d, CODE) for d in docs]
    groups = [g for p in parsed for g in p.groups]
    sealed = [intake.record_payloads(g.identity, g.resources, "accepted") for g in groups]
    now = intake.now()

    def emit_all() -> None:
        tx = _Tx(outbox)

        async def go() -> None:
            for r in sealed:  # the envelope only: encryption is the step before
                assert r.event_identity is not None
                assert r.event_resources is not None
                await intake._emit_sealed(
                    tx, "s", CODE, "k", r.event_identity, r.event_resources, 1, now
                )

        asyncio.run(go())

    steps: dict[str, Callable[[], object]] = {
        "request hash (sha256)": each(bodies, lambda b: hashlib.sha256(b).hexdigest()),
        "JSON parse": each(bodies, parse_json),
        "FHIR validate + group": each(docs, lambda d: parse_bundle(d, CODE)),
        "patient keys + identity digests": each(
            groups,
            lambda g: (intake.patient_key(CODE, g.patient_id), intake.identity_digests(g.identity)),
        ),
        "record + event payloads (dumps + encrypt)": each(
            groups, lambda g: intake.record_payloads(g.identity, g.resources, "accepted")
        ),
        "outbox event build (per patient)": emit_all,
    }
    print(f"{patients * per_patient}-resource bundles ({patients} patients), µs CPU per bundle:")
    total = 0.0
    for name, fn in steps.items():
        us = best(args.rounds, fn) / len(bodies) * 1e6
        total += us
        print(f"  {name:<44} {us:>8.0f}")
    print(f"  {'total':<44} {total:>8.0f}")


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        settings = load_settings(
            IntakeSettings,
            database_url=f"sqlite:///{state}/x.db",
            bus="memory",
            crypto=dev_crypto(state, Zone.CORE),
        )
        intake = Intake(_Runtime(settings))
        outbox = OutboxWriter(metadata.tables["kiban_outbox"], zone=Zone.CORE, registry=REGISTRY)
        measure(intake, outbox, 4, 25, args)
        measure(intake, outbox, 1, 20, args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--bundles", type=int, default=200)
    main(parser.parse_args())
