"""Dataset builds through the running service: anonymized and pseudonymized files, the privacy
check that stops a release, purges during a build, and builds interrupted by a restart."""

from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq  # type: ignore[import-untyped]
from anonymizer_kit import (
    ADMIN,
    FREE_TEXT,
    Peer,
    build_of,
    dataset_request,
    pseudonym,
    record,
    settings_for,
    stats,
)
from sqlalchemy import insert

from kiban_anonymizer.main import create_app
from kiban_anonymizer.store.tables import builds
from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_common.events import DATASET_BUILT, DatasetBuiltV1
from kiban_testing import eventually, running_service
from kiban_testing.services import RunningService

RARE = "Q87.4"  # one person only: a rare diagnosis


async def _load(svc: RunningService, peer: Peer, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(n):
        codes = ["I50.0" if i % 2 else "I50.9"]
        if i == 0:
            codes.append(RARE)
        await peer.linked(record(i, rng, codes=codes))
    await eventually(lambda: stats(svc), until=lambda s: s["persons"] == n, timeout=30)


def _files(build: dict[str, Any]) -> dict[str, Path]:
    return {f["name"]: Path(urlparse(f["uri"]).path) for f in build["files"]}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


async def test_anonymized_build_is_k_anonymous_without_identifiers_and_ships_its_files(
    service: RunningService, peer: Peer
) -> None:
    await _load(service, peer, 60)
    await peer.request(dataset_request("rel-a1", k=5))
    build = await build_of(service, "rel-a1")
    assert build["status"] == "ready", build["reason"]
    files = _files(build)
    expected = {
        f"{t}.{ext}"
        for t in ("persons", "conditions", "observations", "medications")
        for ext in ("csv", "parquet")
    }
    assert set(files) == expected
    for f in build["files"]:
        path = files[f["name"]]
        assert path.parent.name == "rel-a1"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
        text = path.read_bytes()
        assert FREE_TEXT.encode() not in text
        assert b"aaaaaaaaaaaaaaaaaaaa" not in text  # no pseudonym
    people = _csv(files["persons.csv"])
    assert set(people[0]) == {
        "person_id",
        "age",
        "sex",
        "postal_area",
        "first_diagnosis",
        "primary_diagnosis",
        "deceased",
        "death_date",
    }
    classes = Counter((p["age"], p["sex"], p["postal_area"], p["first_diagnosis"]) for p in people)
    assert min(classes.values()) >= 5
    assert all(len(p["postal_area"]) != 7 for p in people)  # never a full postal code
    # Dates are generalized (month or coarser), rare diagnoses never released as such.
    conditions = _csv(files["conditions.csv"])
    assert all(len(c["onset_date"]) <= 9 for c in conditions)
    assert not any(c["code"].startswith("Q87") for c in conditions)
    assert {c["person_id"] for c in conditions} <= {p["person_id"] for p in people}
    assert pq.read_table(files["persons.parquet"]).num_rows == len(people)

    report = build["report"]
    assert report["achieved"]["k"] >= 5
    assert report["measured"]["prosecutor_risk"]["max"] <= 1 / 5
    assert set(report["information_loss"]) == {"gcp", "discernibility"}
    assert report["measured"]["class_sizes"]
    built = await peer.read(DATASET_BUILT, count=1)
    event = built[0]
    assert isinstance(event, DatasetBuiltV1)
    assert (event.release_id, event.status, event.build_id) == (
        "rel-a1",
        "ready",
        build["build_id"],
    )
    assert event.privacy is not None
    assert event.privacy.achieved_k is not None
    assert event.privacy.k == 5
    assert event.privacy.achieved_k >= 5
    assert {f.name: f.sha256 for f in event.files} == {
        f["name"]: f["sha256"] for f in build["files"]
    }


async def test_anonymized_releases_draw_new_person_ids_pseudonymized_keep_them_per_application(
    service: RunningService, peer: Peer
) -> None:
    await _load(service, peer, 40)
    await peer.request(dataset_request("rel-x1", "app-1"))
    await peer.request(dataset_request("rel-x2", "app-1"))
    await peer.request(dataset_request("rel-p1", "app-1", kind="pseudonymized"))
    await peer.request(dataset_request("rel-p2", "app-1", kind="pseudonymized"))
    await peer.request(dataset_request("rel-p3", "app-2", kind="pseudonymized"))
    ids: dict[str, set[str]] = {}
    rows: dict[str, list[dict[str, str]]] = {}
    for release in ("rel-x1", "rel-x2", "rel-p1", "rel-p2", "rel-p3"):
        build = await build_of(service, release)
        assert build["status"] == "ready", build["reason"]
        rows[release] = _csv(_files(build)["conditions.csv"])
        ids[release] = {p["person_id"] for p in _csv(_files(build)["persons.csv"])}
    assert ids["rel-x1"].isdisjoint(ids["rel-x2"])
    assert ids["rel-p1"] == ids["rel-p2"]
    assert len(ids["rel-p1"]) == 40
    assert ids["rel-p1"].isdisjoint(ids["rel-p3"])
    assert ids["rel-p1"].isdisjoint(ids["rel-x1"])
    expected = {service.context.stable_id("app-1", pseudonym(i)) for i in range(40)}
    assert ids["rel-p1"] == expected
    # Pseudonymized keeps the rare diagnosis and exact dates; anonymized does not.
    assert any(c["code"] == RARE for c in rows["rel-p1"])
    assert all(len(c["onset_date"]) == 10 for c in rows["rel-p1"])
    assert not any(c["code"].startswith("Q87") for c in rows["rel-x1"])
    for release in ("rel-p1", "rel-x1"):
        assert not any("aaaaaaaaaaaaaaaaaaaa" in v for r in rows[release] for v in r.values())


async def test_every_table_in_csv_and_parquet_carries_the_same_person_ids(
    service: RunningService, peer: Peer
) -> None:
    """A row sample of any released file, CSV or Parquet, names its person: every table has a
    `person_id` column in both formats with the same values row by row; anonymized ids are new
    per release, pseudonymized ids stable per application."""
    await _load(service, peer, 30)
    tables = (
        "Patient",
        "Condition",
        "Observation",
        "MedicationRequest",
        "AllergyIntolerance",
        "Procedure",
        "Encounter",
    )
    releases = {
        "rel-t1": ("app-1", "anonymized"),
        "rel-t2": ("app-1", "anonymized"),
        "rel-t3": ("app-1", "pseudonymized"),
        "rel-t4": ("app-1", "pseudonymized"),
    }
    for release, (application, kind) in releases.items():
        await peer.request(dataset_request(release, application, kind=kind, resources=tables))
    ids: dict[str, set[str]] = {}
    for release in releases:
        build = await build_of(service, release)
        assert build["status"] == "ready", build["reason"]
        files = _files(build)
        names = {n.rsplit(".", 1)[0] for n in files}
        assert names == {
            "persons",
            "conditions",
            "observations",
            "medications",
            "allergies",
            "procedures",
            "encounters",
        }
        assert {f"{t}.{ext}" for t in names for ext in ("csv", "parquet")} == set(files)
        people = {p["person_id"] for p in _csv(files["persons.csv"])}
        assert people
        assert all(people)
        for name in names:
            from_csv = [r["person_id"] for r in _csv(files[f"{name}.csv"])]
            parquet = pq.read_table(files[f"{name}.parquet"])
            assert parquet.column_names[0] == "person_id", name
            assert parquet.column("person_id").to_pylist() == from_csv, name
            assert all(from_csv), name  # no row without its person
            assert set(from_csv) <= people, name
        ids[release] = people
    assert ids["rel-t1"].isdisjoint(ids["rel-t2"])  # anonymized: random per release
    assert ids["rel-t3"] == ids["rel-t4"]  # pseudonymized: stable per application
    assert ids["rel-t3"].isdisjoint(ids["rel-t1"])


async def test_a_build_that_cannot_reach_k_fails_loudly_and_ships_nothing(
    service: RunningService, peer: Peer
) -> None:
    await _load(service, peer, 3)
    await peer.request(dataset_request("rel-small", k=5))
    small = await build_of(service, "rel-small")
    # l=3 on a two-valued attribute cannot be reached however much is generalized
    await _load(service, peer, 20, seed=8)
    await peer.request(dataset_request("rel-l", k=2, l=3, sensitive="deceased"))
    diverse = await build_of(service, "rel-l")
    for build in (small, diverse):
        assert build["status"] == "failed"
        assert build["files"] == []
        assert build["reason"]
    assert "k=5" in small["reason"]
    assert "l=3" in diverse["reason"]
    events = {e.release_id: e for e in await peer.read(DATASET_BUILT, count=2)}
    assert events["rel-small"].status == "failed"
    assert events["rel-small"].files == []
    assert events["rel-small"].reason == small["reason"]
    files_dir = service.context.files_dir
    assert not (files_dir / "rel-small").exists()
    assert not (files_dir / "rel-l").exists()
    assert not any(p.name.startswith(".staging") for p in files_dir.glob("*"))


async def test_a_purge_arriving_during_a_build_excludes_the_person_and_is_recorded(
    service: RunningService, peer: Peer
) -> None:
    await _load(service, peer, 30)
    victim = pseudonym(5)
    calls: list[str] = []

    async def purge_once(build_id: str) -> None:
        calls.append(build_id)
        if len(calls) == 1:  # after the first snapshot, before the files are released
            await peer.purged(victim, "opt-during")
            await eventually(lambda: stats(service), until=lambda s: s["purged_persons"] == 1)

    service.context.after_snapshot = purge_once
    await peer.request(dataset_request("rel-race", "app-9", kind="pseudonymized"))
    build = await build_of(service, "rel-race")
    assert build["status"] == "ready"
    assert len(calls) == 2  # built again after the purge
    assert build["purge_reruns"] == 1
    assert build["excluded_after_purge"] == 1
    people = _csv(_files(build)["persons.csv"])
    assert len(people) == 29
    victim_id = service.context.stable_id("app-9", victim)
    for path in _files(build).values():
        assert victim_id.encode() not in path.read_bytes()

    # a build that starts after the purge never sees the person
    calls.clear()
    await peer.request(dataset_request("rel-after", "app-9", kind="pseudonymized"))
    after = await build_of(service, "rel-after")
    assert after["purge_reruns"] == 0
    assert victim_id not in {p["person_id"] for p in _csv(_files(after)["persons.csv"])}


async def test_a_build_interrupted_by_a_restart_is_retried_then_failed_after_max_attempts(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    peer = Peer(MemoryTransport(broker))
    settings = settings_for(
        tmp_path, build={"poll_interval_ms": 20, "lease_seconds": 0.5, "max_attempts": 2}
    )
    async with running_service(create_app, settings, broker=broker) as svc:
        await _load(svc, peer, 10)
        stale = datetime.now(UTC) - timedelta(hours=1)
        spec = dataset_request("x", kind="pseudonymized").dataset.model_dump(mode="json")
        async with svc.runtime.transaction() as tx:
            connection = await tx.session.connection()
            for build_id, release, attempts in (("bld-r1", "rel-r1", 1), ("bld-r2", "rel-r2", 2)):
                await connection.execute(
                    insert(builds).values(
                        build_id=build_id,
                        release_id=release,
                        application_id="app-r",
                        kind="pseudonymized",
                        spec=spec,
                        requested_at=stale,
                        status="running",  # a worker that died mid-build
                        attempts=attempts,
                        purge_reruns=0,
                        excluded_after_purge=0,
                        worker="w-gone",
                        heartbeat_at=stale,
                        created_at=stale,
                        started_at=stale,
                    )
                )
        resumed = await build_of(svc, "rel-r1")
        gave_up = await build_of(svc, "rel-r2")
        assert (resumed["status"], resumed["attempts"]) == ("ready", 2)
        assert (gave_up["status"], gave_up["attempts"]) == ("failed", 3)
        assert "interrupted" in gave_up["reason"]
        answer = await svc.client.get("/v1/builds/bld-r1", headers=svc.auth(*ADMIN))
        assert answer.json()["report"]["kind"] == "pseudonymized"
