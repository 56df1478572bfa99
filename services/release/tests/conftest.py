"""Shared pieces of the release tests: a settable clock, events as review and the anonymizer
send them, and a fake anonymizer that writes real dataset files and announces them.

The fake anonymizer speaks only the `Transport` interface, so the same one runs on the
in-process broker and on real Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import hmac
import io
import random
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import Transport
from kiban_common.events import (
    APPLICATION_DECIDED,
    DATASET_BUILT,
    DATASET_REQUESTED,
    ApplicationDecidedV1,
    BuiltFile,
    Cohort,
    DatasetBuiltV1,
    DatasetRequestedV1,
    DatasetSpec,
    Event,
    PrivacySummary,
    decode,
    encode,
)

RESEARCHER = "researcher:r-0001"
OTHER_RESEARCHER = "researcher:r-0002"
OPERATOR = "operator:op-01"
DOWNLOAD = ["release:download", "review:apply"]
ADMIN = ["admin"]


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 4, 1, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


def decided(
    application_id: str,
    *,
    applicant: str | None = RESEARCHER,
    kind: str = "anonymized",
    decision: str = "approved",
) -> Event[ApplicationDecidedV1]:
    return Event(
        type=APPLICATION_DECIDED,
        source="/kiban/review",
        key=application_id,
        data=ApplicationDecidedV1(
            application_id=application_id,
            decision=decision,  # type: ignore[arg-type]
            decided_at=datetime.now(UTC),
            organization="Synthetic University",
            user_category="academia",
            dataset=DatasetSpec(
                kind=kind,  # type: ignore[arg-type]
                resources=["Patient", "Condition"],
                cohort=Cohort(condition_codes=["I50*"]),
                k=5,
            ),
            applicant=applicant,
        ),
    )


async def publish(transport: Transport, event: Event[Any]) -> None:
    await transport.ensure_topics([event.type])
    await transport.send([encode(event)])


@dataclass
class Built:
    release_id: str
    application_id: str
    files: dict[str, Path]
    person_ids: list[str]


@dataclass
class FakeAnonymizer:
    """Builds a synthetic dataset for each `dataset-requested` of the applications it is told
    about: `patients.csv` (one row per person) and `conditions.csv` (several per person), with
    a `person_id` column drawn at random per release (anonymized) or a keyed hash of application
    and person (pseudonymized), as convention 7 says. `sabotage` can alter what it announces."""

    transport: Transport
    files_dir: Path
    group: str = field(default_factory=lambda: "fake-anonymizer-" + secrets.token_hex(4))
    applications: set[str] = field(default_factory=set)
    persons: int = 80
    built: dict[str, Built] = field(default_factory=dict)
    sabotage: dict[str, Callable[[DatasetBuiltV1], DatasetBuiltV1]] = field(default_factory=dict)

    async def run(self) -> None:
        consumer = await self.transport.consumer(self.group, [DATASET_REQUESTED])
        try:
            while True:
                received = await consumer.getmany(timeout_ms=100, max_records=50)
                offsets = {}
                for r in received:
                    event = decode(r.message, DatasetRequestedV1)
                    if event.data.application_id in self.applications:
                        await self._build(event.data)
                    offsets[(r.topic, r.partition)] = r.offset + 1
                if offsets:
                    await consumer.commit(offsets)
        finally:
            await consumer.stop()

    async def _build(self, request: DatasetRequestedV1) -> None:
        built = write_dataset(
            self.files_dir,
            request.release_id,
            request.application_id,
            kind=request.dataset.kind,
            persons=self.persons,
        )
        self.built[request.release_id] = built
        data = DatasetBuiltV1(
            release_id=request.release_id,
            build_id="b-" + request.release_id[:8],
            status="ready",
            files=[
                BuiltFile(
                    name=name,
                    rows=_rows(path),
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    uri=path.resolve().as_uri(),
                )
                for name, path in built.files.items()
            ],
            privacy=PrivacySummary(k=request.dataset.k, achieved_k=7, suppressed=3),
        )
        change = self.sabotage.get(request.application_id)
        if change is not None:
            data = change(data)
        await publish(
            self.transport,
            Event(
                type=DATASET_BUILT, source="/kiban/anonymizer", key=request.release_id, data=data
            ),
        )


def write_dataset(
    files_dir: Path, release_id: str, application_id: str, *, kind: str, persons: int
) -> Built:
    rng = random.Random(release_id)  # fixed per release: synthetic and reproducible
    if kind == "anonymized":
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(persons)]
    else:
        key = b"synthetic-pseudonym-key"
        ids = [
            hmac.new(key, f"{application_id}/{n}".encode(), "sha256").hexdigest()[:24]
            for n in range(persons)
        ]
    directory = files_dir / release_id
    directory.mkdir(parents=True, exist_ok=True)
    patients = io.StringIO()
    w = csv.writer(patients, lineterminator="\n")
    w.writerow(["person_id", "sex", "age_band", "prefecture"])
    for pid in ids:
        w.writerow(
            [pid, rng.choice(["male", "female"]), rng.choice(["40-49", "50-59", "60-69"]), "13"]
        )
    conditions = io.StringIO()
    w = csv.writer(conditions, lineterminator="\n")
    w.writerow(["person_id", "code", "onset_year"])
    for pid in ids:
        for _ in range(rng.randint(1, 4)):
            w.writerow(
                [pid, rng.choice(["I50.0", "I50.1", "E11.9", "I10"]), rng.randint(2015, 2024)]
            )
    files = {
        "patients.csv": directory / "patients.csv",
        "conditions.csv": directory / "conditions.csv",
    }
    files["patients.csv"].write_text(patients.getvalue())
    files["conditions.csv"].write_text(conditions.getvalue())
    return Built(release_id, application_id, files, ids)


def _rows(path: Path) -> int:
    return len(path.read_text().splitlines()) - 1


@contextlib.asynccontextmanager
async def anonymizer_running(fake: FakeAnonymizer) -> AsyncIterator[FakeAnonymizer]:
    task = asyncio.create_task(fake.run())
    try:
        yield fake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def sample_rows(source: Path, target: Path, n: int, *, header: bool = True, seed: int = 7) -> Path:
    """`n` random rows of a CSV, as someone leaking part of a file would copy them."""
    lines = source.read_text().splitlines()
    rows = random.Random(seed).sample(lines[1:], n)
    target.write_text("\n".join(([lines[0]] if header else []) + rows) + "\n")
    return target
