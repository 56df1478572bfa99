"""Concurrent bundles are stored together (group commit) with the outcomes each would have
alone: distinct patients share transactions; a failing bundle fails alone and leaves nothing;
bundles naming the same patient, and a repeated Idempotency-Key, are taken one by one; the
same on PostgreSQL with two replicas."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

from conftest import DAY0, FakeClock, Harness
from intake_builders import bundle, jp_patient, observation, patient_bundle
from sqlalchemy import func, select

from kiban_common.bus import MemoryBroker
from kiban_intake.main import create_app
from kiban_intake.settings import IntakeSettings
from kiban_intake.store import queries as q
from kiban_testing import embedded_settings, running_service

OTHER = "1399999998"


async def _count(h: Harness, table: Any) -> int:
    async with h.svc.runtime.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def _batches(h: Harness) -> int:
    taker = h.svc.context.bundles
    assert taker is not None
    return int(taker.batches)


async def test_concurrent_bundles_of_distinct_patients_share_transactions(harness: Harness) -> None:
    h = harness
    for n in range(20):
        await h.notice(f"P{n}", DAY0 - timedelta(days=40))
    responses = await asyncio.gather(
        *(h.post_bundle(patient_bundle("batch", jp_patient(f"P{n}"), n=3)) for n in range(20))
    )
    assert [r.status_code for r in responses] == [202] * 20
    assert all(r.json()["counts"] == {"accepted": 1, "held": 0, "rejected": 0} for r in responses)
    assert len({r.json()["submission_id"] for r in responses}) == 20
    assert _batches(h) < 20
    assert await _count(h, q.submissions) == 20
    assert await _count(h, q.records) == 20
    assert await _count(h, q.patients) == 20
    assert len(h.received()) == 20


async def test_a_failing_bundle_in_a_batch_fails_alone_and_leaves_nothing(harness: Harness) -> None:
    h = harness
    await h.register(OTHER)
    await h.notice("A", DAY0 - timedelta(days=40))
    await h.notice("B", DAY0 - timedelta(days=40))
    await h.notice("D", DAY0 - timedelta(days=40), code=OTHER)
    suspended = await h.svc.client.post(f"/v1/institutions/{OTHER}/suspend", headers=h.admin)
    assert suspended.status_code == 200
    rejected = bundle("transaction", jp_patient("A"), jp_patient("C"), observation("Patient/p-A"))
    responses = await asyncio.gather(
        h.post_bundle(patient_bundle("batch", jp_patient("B"))),
        h.post_bundle(rejected),  # C has no notice: the whole transaction fails
        h.post_bundle(patient_bundle("batch", jp_patient("D", code=OTHER)), code=OTHER),
    )
    assert [r.status_code for r in responses] == [202, 422, 403]
    assert responses[2].json()["code"] == "institution_suspended"
    assert await _count(h, q.submissions) == 1
    assert await _count(h, q.patients) == 1  # B only: nothing of A, C or D
    assert len(h.received()) == 1


async def test_bundles_naming_the_same_patient_are_taken_one_by_one(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    renamed = jp_patient("A", family="佐藤", family_kana="サトウ")
    responses = await asyncio.gather(
        h.post_bundle(patient_bundle("batch", jp_patient("A"))),
        h.post_bundle(patient_bundle("batch", renamed)),
        h.post_bundle(patient_bundle("batch", jp_patient("A"))),
    )
    assert [r.status_code for r in responses] == [202] * 3
    assert await _count(h, q.patients) == 1
    assert await _count(h, q.records) == 3
    # the identity keys are those of the last bundle alone, as if posted in turn
    async with h.svc.runtime.engine.connect() as conn:
        keys = (await conn.execute(select(q.identity_keys.c.digest))).scalars().all()
    assert len(keys) == len(set(keys))


async def test_the_same_idempotency_key_twice_at_once_is_stored_once(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    await h.notice("B", DAY0 - timedelta(days=40))
    doc = patient_bundle("batch", jp_patient("A"))
    responses = await asyncio.gather(
        h.post_bundle(doc, **{"Idempotency-Key": "same"}),
        h.post_bundle(doc, **{"Idempotency-Key": "same"}),
        h.post_bundle(patient_bundle("batch", jp_patient("B"))),
    )
    assert [r.status_code for r in responses] == [202] * 3
    assert responses[0].json()["submission_id"] == responses[1].json()["submission_id"]
    assert await _count(h, q.submissions) == 2


async def test_two_replicas_on_postgresql_keep_each_bundles_outcome(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    """On PostgreSQL, two replicas (one database, one state directory) taking bundles at
    once: distinct patients, one patient in bundles at both, one Idempotency-Key sent to both."""
    url = postgres_cluster.create_database("intake_group_commit")
    settings = embedded_settings(IntakeSettings, tmp_path, database_url=url)
    clock = FakeClock()
    async with (
        running_service(create_app, settings, broker=MemoryBroker()) as a,
        running_service(create_app, settings, broker=MemoryBroker()) as b,
    ):
        one, two = Harness(a, MemoryBroker(), clock), Harness(b, MemoryBroker(), clock)
        for svc in (a, b):
            svc.context.clock = clock
        await one.register()
        for n in range(12):
            await one.notice(f"P{n}", DAY0 - timedelta(days=40))
        doc = patient_bundle("batch", jp_patient("P11"))
        calls = [
            (one, two)[n % 2].post_bundle(patient_bundle("batch", jp_patient(f"P{n % 10}")))
            for n in range(20)
        ]
        calls += [
            one.post_bundle(doc, **{"Idempotency-Key": "both"}),
            two.post_bundle(doc, **{"Idempotency-Key": "both"}),
        ]
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [202] * 22
        assert responses[-1].json()["submission_id"] == responses[-2].json()["submission_id"]
        assert await _count(one, q.submissions) == 21
        assert await _count(one, q.records) == 21
        assert await _count(one, q.patients) == 11
