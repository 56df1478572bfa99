"""The intake service end to end on the embedded default (SQLite, in-process bus), with the
service's clock moved by the test."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

from conftest import DAY0, Harness
from intake_builders import (
    CODE,
    bundle,
    condition,
    jp_patient,
    observation,
    patient_bundle,
    synthea_bundle,
)
from sqlalchemy import func, select

from kiban_common.events import INTAKE_OPTOUT_APPLIED, OptoutAppliedV1, decode
from kiban_intake.store import queries as q
from kiban_testing import eventually


async def _count(h: Harness, table: Any, *where: Any) -> int:
    async with h.svc.runtime.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def _stored(h: Harness) -> dict[str, int]:
    return {
        "submissions": await _count(h, q.submissions),
        "records": await _count(h, q.records),
        "patients": await _count(h, q.patients),
        "outbox": len(h.received()),
    }


# -- institutions --------------------------------------------------------------------------------


async def test_only_a_registered_active_institution_matching_the_token_can_submit(
    harness: Harness,
) -> None:
    h, client = harness, harness.svc.client
    body = patient_bundle("batch", jp_patient("A001"))
    assert (await h.post_bundle(body, code="9999999999")).status_code == 403  # not registered
    r = await client.post(
        "/v1/bundles", json=body, headers=h.svc.auth("operator:x", ["intake:submit"])
    )
    assert r.json()["code"] == "not_an_institution"
    r = await client.post(
        "/v1/bundles", json=body, headers=h.svc.auth(f"institution:{CODE}", ["x"])
    )
    assert r.status_code == 403
    assert (await client.post("/v1/bundles", json=body)).status_code == 401
    assert (await h.post_bundle(body, **{"Idempotency-Key": "k1"})).status_code == 202
    before = await _stored(h)
    r = await client.post(f"/v1/institutions/{CODE}/suspend", headers=h.admin)
    assert r.json()["status"] == "suspended"
    r = await h.post_bundle(body)
    assert (r.status_code, r.json()["code"]) == (403, "institution_suspended")
    # checked with the patients in the submission's transaction: nothing of it is stored, an
    # invalid or oversized body and an idempotent replay are refused the same way
    other = patient_bundle("batch", jp_patient("A002"))
    assert (await h.post_bundle(other)).status_code == 403
    assert (await h.post_bundle({"resourceType": "Bundle"})).status_code == 403
    assert (await h.post_bundle(body, **{"Idempotency-Key": "k1"})).status_code == 403
    assert await _stored(h) == before
    await client.post(f"/v1/institutions/{CODE}/reinstate", headers=h.admin)
    assert (await h.post_bundle(other)).status_code == 202
    r = await h.post_bundle(body, **{"Idempotency-Key": "k1"})
    assert (r.status_code, r.headers.get("Idempotent-Replayed")) == (202, "true")


async def test_institutions_register_list_and_refuse_duplicates_and_non_admins(
    harness: Harness,
) -> None:
    h, client = harness, harness.svc.client
    again = {"code": CODE, "name": "x", "kind": "clinic"}
    assert (await client.post("/v1/institutions", json=again, headers=h.admin)).status_code == 409
    r = await client.post("/v1/institutions", json={**again, "code": "2"}, headers=h.institution())
    assert r.status_code == 403
    listed = (await client.get("/v1/institutions", headers=h.admin)).json()
    assert [(i["code"], i["status"]) for i in listed] == [(CODE, "active")]


# -- notices and the waiting period ------------------------------------------------------------


async def test_no_notice_is_rejected_and_nothing_of_the_patient_is_kept(harness: Harness) -> None:
    r = await harness.post_bundle(patient_bundle("batch", jp_patient("A001")))
    assert r.status_code == 202
    assert r.json()["patients"] == [
        {"patient_id": "A001", "status": "rejected", "reason": "no_notice", "eligible_on": None}
    ]
    stored = await _stored(harness)
    assert (stored["records"], stored["patients"], stored["outbox"]) == (0, 0, 0)


async def test_day_29_is_held_and_the_scheduler_releases_it_on_day_30(harness: Harness) -> None:
    h = harness
    await h.notice("A001", DAY0)
    h.clock.advance(29)
    r = await h.post_bundle(patient_bundle("collection", jp_patient("A001"), n=3))
    [patient] = r.json()["patients"]
    assert patient == {
        "patient_id": "A001",
        "status": "held",
        "reason": "notice_period",
        "eligible_on": (DAY0 + timedelta(days=30)).isoformat(),
    }
    h.svc.context.scheduler_wake.set()
    await h.svc.context.release_due()
    assert h.received() == []  # still day 29
    h.clock.advance(1)
    h.svc.context.scheduler_wake.set()  # the background loop, not the test, releases it
    [event] = await eventually(lambda: _async(h.received()), until=lambda e: len(e) == 1)
    identity, resources = h.open_event(event)
    assert identity["family_name_kana"] == "ヤマダ"
    assert [x["resourceType"] for x in resources] == ["Observation"] * 3
    assert event.data.resource_count == 3
    assert event.key == h.svc.runtime.crypto.index.digest(
        f"{CODE}/A001", context="kiban.patient-key"
    )
    assert await _count(h, q.records, q.records.c.status == "accepted") == 1


async def test_held_records_survive_a_restart_and_are_released_by_the_next_process(
    tmp_path: Any,
) -> None:
    from conftest import FakeClock

    from kiban_common.bus import MemoryBroker
    from kiban_common.events import RECORD_RECEIVED
    from kiban_intake.main import create_app
    from kiban_intake.settings import IntakeSettings
    from kiban_testing import embedded_settings, running_service

    settings = embedded_settings(IntakeSettings, tmp_path, scheduler_interval_seconds=0.05)
    broker = MemoryBroker()
    async with running_service(create_app, settings, broker=broker) as svc:
        svc.context.clock = clock = FakeClock()
        h = Harness(svc, broker, clock)
        await h.register()
        await h.notice("A001", DAY0)
        clock.advance(10)
        r = await h.post_bundle(patient_bundle("batch", jp_patient("A001")))
        assert r.json()["counts"]["held"] == 1
    assert broker.logs.get(RECORD_RECEIVED, []) == []
    async with running_service(create_app, settings, broker=broker) as svc:
        svc.context.clock = FakeClock(DAY0 + timedelta(days=30))
        svc.context.scheduler_wake.set()
        await eventually(
            lambda: _async(broker.logs.get(RECORD_RECEIVED, [])), until=lambda e: len(e) == 1
        )


async def test_a_15_year_old_notified_without_the_guardian_is_rejected(harness: Harness) -> None:
    h = harness
    await h.notice("K15", DAY0 - timedelta(days=60))
    r = await h.post_bundle(patient_bundle("batch", jp_patient("K15", birth="2010-01-01")))
    assert r.json()["patients"][0]["reason"] == "guardian_not_notified"
    await h.notice("K15G", DAY0 - timedelta(days=60), guardian=True)
    r = await h.post_bundle(patient_bundle("batch", jp_patient("K15G", birth="2010-01-01")))
    assert r.json()["patients"][0]["status"] == "accepted"


async def test_turned_16_is_held_and_listed_until_a_renewed_notice_is_recorded(
    harness: Harness,
) -> None:
    h = harness
    # Born 2009-04-20: notified (with the guardian) at 15, 16 since 2025-04-20.
    await h.notice("T16", date(2024, 12, 1), guardian=True)
    h.clock.day = date(2025, 5, 1)
    r = await h.post_bundle(patient_bundle("batch", jp_patient("T16", birth="2009-04-20")))
    assert r.json()["patients"][0] | {"patient_id": "T16"} == {
        "patient_id": "T16",
        "status": "held",
        "reason": "renewed_notice_required",
        "eligible_on": None,
    }
    due = (await h.svc.client.get("/v1/notices/due", headers=h.institution())).json()
    assert due == {
        "patients": [
            {
                "patient_id": "T16",
                "turned_16_on": "2025-04-20",
                "last_notified_on": "2024-12-01",
                "held_records": 1,
            }
        ]
    }
    await h.notice("T16", date(2025, 5, 2))
    assert (await h.svc.client.get("/v1/notices/due", headers=h.institution())).json() == {
        "patients": []
    }
    h.clock.day = date(2025, 5, 31)
    await h.svc.context.release_due()
    assert h.received() == []  # the renewed notice starts its own 30 days
    h.clock.day = date(2025, 6, 1)
    h.svc.context.scheduler_wake.set()
    await eventually(lambda: _async(h.received()), until=lambda e: len(e) == 1)


async def test_a_minor_whose_period_ends_after_turning_16_stays_held_at_release(
    harness: Harness,
) -> None:
    h = harness
    await h.notice("M1", date(2025, 4, 1), guardian=True)
    h.clock.day = date(2025, 4, 5)
    r = await h.post_bundle(patient_bundle("batch", jp_patient("M1", birth="2009-04-20")))
    assert r.json()["patients"][0]["eligible_on"] == "2025-05-01"
    h.clock.day = date(2025, 5, 1)
    await h.svc.context.release_due()
    assert h.received() == []
    async with h.svc.runtime.engine.connect() as conn:
        row = (await conn.execute(select(q.records.c.reason, q.records.c.status))).one()
    assert tuple(row) == ("renewed_notice_required", "held")


async def test_a_deceased_patient_is_accepted_with_the_date_of_death(harness: Harness) -> None:
    h = harness
    await h.notice("D1", DAY0 - timedelta(days=45))
    patient = jp_patient("D1", deceased="2025-03-15T08:00:00+09:00")
    r = await h.post_bundle(patient_bundle("batch", patient))
    assert r.json()["counts"] == {"accepted": 1, "held": 0, "rejected": 0}
    [event] = await eventually(lambda: _async(h.received()), until=lambda e: len(e) == 1)
    assert h.open_event(event)[0]["deceased_on"] == "2025-03-15"


# -- bundles ---------------------------------------------------------------------------------------


async def test_synthea_style_transaction_bundle_without_kana_is_accepted(harness: Harness) -> None:
    h = harness
    await h.notice("mr-7", DAY0 - timedelta(days=31))
    r = await h.post_bundle(synthea_bundle())
    assert r.status_code == 202, r.text
    assert r.json()["counts"]["accepted"] == 1
    assert r.json()["ignored_resources"] == 3
    [event] = await eventually(lambda: _async(h.received()), until=lambda e: len(e) == 1)
    identity, resources = h.open_event(event)
    assert identity["family_name_kana"] is None
    assert identity["family_name"] == "Synthetic123"
    assert sorted(x["resourceType"] for x in resources) == ["Encounter", "Observation"]


async def test_batch_gives_each_patient_its_own_outcome(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    await h.notice("B", DAY0 - timedelta(days=5))
    doc = bundle(
        "batch",
        jp_patient("A"),
        jp_patient("B", family="佐藤"),
        jp_patient("C"),
        observation("Patient/p-A"),
        condition("Patient/p-B"),
        observation("Patient/p-C"),
    )
    body = (await h.post_bundle(doc)).json()
    assert [(p["patient_id"], p["status"]) for p in body["patients"]] == [
        ("A", "accepted"),
        ("B", "held"),
        ("C", "rejected"),
    ]
    assert body["counts"] == {"accepted": 1, "held": 1, "rejected": 1}


async def test_a_transaction_with_a_rejected_patient_stores_nothing(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    doc = bundle(
        "transaction",
        jp_patient("A"),
        jp_patient("C"),
        observation("Patient/p-A"),
        observation("Patient/p-C"),
    )
    r = await h.post_bundle(doc)
    assert r.status_code == 422
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource"]
    assert outcome["issue"][0]["code"] == "business-rule"
    assert await _stored(h) == {"submissions": 0, "records": 0, "patients": 0, "outbox": 0}


async def test_idempotency_key_replays_the_outcome_and_refuses_another_body(
    harness: Harness,
) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    doc = patient_bundle("batch", jp_patient("A"))
    first = await h.post_bundle(doc, **{"Idempotency-Key": "k-1"})
    again = await h.post_bundle(doc, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert await _count(h, q.submissions) == 1
    await eventually(lambda: _async(h.received()), until=lambda e: len(e) == 1)
    other = patient_bundle("batch", jp_patient("A"), n=5)
    conflict = await h.post_bundle(other, **{"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409
    assert conflict.json()["resourceType"] == "OperationOutcome"
    got = await h.svc.client.get(
        f"/v1/submissions/{first.json()['submission_id']}", headers=h.institution()
    )
    assert got.json()["patients"] == first.json()["patients"]
    other_inst = h.svc.auth("institution:0000000001", ["intake:submit"])
    got = await h.svc.client.get(
        f"/v1/submissions/{first.json()['submission_id']}", headers=other_inst
    )
    assert got.status_code == 404


async def test_invalid_fhir_is_422_operation_outcome_and_stores_nothing(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    bad_date = patient_bundle("batch", jp_patient("A"))
    bad_date["entry"][1]["resource"]["effectiveDateTime"] = "2025-02-30T10:00:00+09:00"
    dangling = bundle("batch", jp_patient("A"), observation("Patient/missing"))
    for body in (
        b"{not json",
        json.dumps({"resourceType": "Patient"}).encode(),
        json.dumps(bad_date).encode(),
        json.dumps(dangling).encode(),
    ):
        r = await h.svc.client.post("/v1/bundles", content=body, headers=h.institution())
        assert r.status_code == 422, r.text
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.json()["issue"][0]["expression"]
    assert await _stored(h) == {"submissions": 0, "records": 0, "patients": 0, "outbox": 0}


async def test_a_body_over_the_limit_is_413_and_stores_nothing(tmp_path: Any) -> None:
    from conftest import FakeClock

    from kiban_common.bus import MemoryBroker
    from kiban_intake.main import create_app
    from kiban_intake.settings import IntakeSettings
    from kiban_testing import embedded_settings, running_service

    settings = embedded_settings(
        IntakeSettings, tmp_path, bundle_max_bytes=2048, bulk_max_bytes=4096
    )
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        svc.context.clock = FakeClock()
        h = Harness(svc, MemoryBroker(), svc.context.clock)
        await h.register()
        await h.notice("A", DAY0 - timedelta(days=40))
        r = await h.post_bundle(patient_bundle("batch", jp_patient("A"), n=20))
        assert r.status_code == 413
        assert r.json()["issue"][0]["code"] == "too-long"
        lines = "\n".join(
            json.dumps(x, ensure_ascii=False)
            for x in [jp_patient("A"), *(observation("Patient/p-A") for _ in range(20))]
        )

        async def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: counted as read
            data = lines.encode()
            for i in range(0, len(data), 1000):
                yield data[i : i + 1000]

        r = await svc.client.post("/v1/bulk", content=chunks(), headers=h.institution())
        assert r.status_code == 413
        assert await _stored(h) == {"submissions": 0, "records": 0, "patients": 0, "outbox": 0}


# -- bulk ------------------------------------------------------------------------------------------


async def test_bulk_ndjson_streams_and_reports_bad_lines_by_number(harness: Harness) -> None:
    h = harness
    for pid in ("A", "B"):
        await h.notice(pid, DAY0 - timedelta(days=40))
    h.svc.context.settings.bulk_flush_resources = 3  # several flushes within the request
    rows = [
        jp_patient("A"),
        jp_patient("B", family="佐藤"),
        jp_patient("C"),
        *(observation("Patient/p-A") for _ in range(4)),
        observation("Patient/p-B"),
        observation("Patient/p-C"),
        {"resourceType": "Organization", "name": "x"},
    ]
    text = [json.dumps(x, ensure_ascii=False) for x in rows]
    text.insert(4, "{broken")  # line 5
    text.append(json.dumps(observation("Patient/unknown")))  # line 12
    bad = observation("Patient/p-A")
    bad["effectiveDateTime"] = "yesterday"
    text.append(json.dumps(bad))  # line 13
    r = await h.svc.client.post(
        "/v1/bulk", content="\n".join(text).encode(), headers=h.institution()
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert [(e["line"], e["element"]) for e in body["errors"]] == [
        (5, "line"),
        (12, "Observation.subject.reference"),
        (13, "Observation.effectiveDateTime"),
    ]
    assert body["counts"] == {"accepted": 2, "held": 0, "rejected": 1}
    assert body["resources"] == {"received": 12, "kept": 5, "ignored": 1, "not_kept": 1}
    events = await eventually(lambda: _async(h.received()), until=lambda e: len(e) >= 3)
    kept = sum(e.data.resource_count for e in events)
    assert kept == 5
    got = await h.svc.client.get(f"/v1/submissions/{body['submission_id']}", headers=h.admin)
    assert got.json()["counts"] == body["counts"]
    assert got.json()["kind"] == "bulk"


# -- opt-outs --------------------------------------------------------------------------------------


def _applied(h: Harness) -> list[OptoutAppliedV1]:
    return [decode(m, OptoutAppliedV1).data for m in h.broker.logs.get(INTAKE_OPTOUT_APPLIED, [])]


async def test_opt_out_drops_held_records_and_blocks_later_submissions(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0)
    h.clock.advance(5)
    await h.post_bundle(patient_bundle("batch", jp_patient("A")))  # held
    optout_id = await h.request_optout(
        {
            "family_name": "山田",
            "given_name": "太郎",
            "family_name_kana": "やまだ",
            "given_name_kana": "ﾀﾛｳ",
            "birth_date": "1980-01-02",
        }
    )
    [applied] = await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 1)
    assert (applied.optout_id, applied.matched) == (optout_id, 1)
    assert applied.purged["held_records_dropped"] == 1
    h.clock.advance(60)
    await h.svc.context.release_due()
    assert h.received() == []  # the held record was never provided
    r = await h.post_bundle(patient_bundle("batch", jp_patient("A")))
    assert r.json()["patients"][0]["reason"] == "opted_out"


async def test_opt_out_for_a_person_not_yet_seen_blocks_them_when_they_arrive(
    harness: Harness,
) -> None:
    h = harness
    await h.request_optout(
        {"institution_patient_id": "NEW1"}, scope="institution", institution_code=CODE
    )
    [applied] = await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 1)
    assert applied.matched == 0
    await h.request_optout(
        {"family_name": "鈴木", "given_name": "花子", "birth_date": "1990-03-04"}
    )
    await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 2)
    await h.notice("NEW1", DAY0 - timedelta(days=40))
    await h.notice("NEW2", DAY0 - timedelta(days=40))
    doc = bundle(
        "batch",
        jp_patient("NEW1", family="田中"),
        jp_patient("NEW2", family="鈴木", given="花子", family_kana=None, birth="1990-03-04"),
        jp_patient("OK", family="高橋"),
    )
    await h.notice("OK", DAY0 - timedelta(days=40))
    body = (await h.post_bundle(doc)).json()
    assert [(p["patient_id"], p["reason"]) for p in body["patients"]] == [
        ("NEW1", "opted_out"),
        ("NEW2", "opted_out"),
        ("OK", None),
    ]


async def test_stop_and_delete_deletes_the_stored_raw_data(harness: Harness) -> None:
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    await h.post_bundle(patient_bundle("batch", jp_patient("A")))
    await h.request_optout(
        {"institution_patient_id": "A"},
        scope="institution",
        institution_code=CODE,
        action="stop_and_delete",
    )
    [applied] = await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 1)
    assert applied.matched == 1
    assert applied.purged["raw_records_deleted"] == 1
    assert await _count(h, q.records, q.records.c.resources.is_not(None)) == 0
    assert await _count(h, q.patients, q.patients.c.identity.is_not(None)) == 0


async def _async(value: Any) -> Any:
    return value


async def test_a_patient_resubmitted_under_a_new_name_is_matched_by_the_new_name_only(
    harness: Harness,
) -> None:
    """Identity keys are rewritten only when the name or birth date changed (a repeat
    submission leaves them as they are); a changed name replaces the old keys."""
    h = harness
    await h.notice("A", DAY0 - timedelta(days=40))
    for _ in range(2):  # the repeat keeps the same keys
        await h.post_bundle(patient_bundle("batch", jp_patient("A")))
    assert await _count(h, q.identity_keys) == 2  # kanji + birth date, kana + birth date
    renamed = jp_patient("A", family="佐藤", family_kana="サトウ")
    assert (await h.post_bundle(patient_bundle("batch", renamed))).status_code == 202
    assert await _count(h, q.identity_keys) == 2
    old = {"family_name": "山田", "given_name": "太郎", "birth_date": "1980-01-02"}
    await h.request_optout(old)
    [applied] = await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 1)
    assert applied.matched == 0
    await h.request_optout({**old, "family_name": "佐藤"})
    applied = await eventually(lambda: _async(_applied(h)), until=lambda a: len(a) == 2)
    assert applied[1].matched == 1
