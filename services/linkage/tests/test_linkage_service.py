"""The service on the embedded default: linking, merging, opt-outs, block entries and the
operator API, driven through events exactly as intake and optout send them."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from kiban_common.events import (
    LINKAGE_OPTOUT_APPLIED,
    PERSON_PURGED,
    RECORD_LINKED,
)
from kiban_linkage.domain.matching import MatchModel
from kiban_linkage.store.tables import operator_log, records

if TYPE_CHECKING:
    from conftest import Linked

INSTITUTION = "1312345678"
OTHER_INSTITUTION = "2712345678"


def taro(**changes: Any) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "institution_patient_id": "P-0001",
        "family_name": "山田",
        "given_name": "太郎",
        "family_name_kana": "ヤマダ",
        "given_name_kana": "タロウ",
        "birth_date": "1980-01-02",
        "sex": "male",
        "postal_code": "100-0001",
        "address": "東京都千代田区千代田1-1",
        "insurance_numbers": ["06130012"],
        "deceased_on": None,
    }
    identity.update(changes)
    return identity


def condition(patient_id: str = "P-0001") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"cond-{patient_id}",
        "subject": {"reference": f"Patient/{patient_id}"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "I50.0"}]},
        "onsetDateTime": "2024-03-01",
    }


def hanako(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "institution_patient_id": "P-0002",
        "given_name": "花子",
        "given_name_kana": "ハナコ",
        "sex": "female",
        "birth_date": "1985-05-05",
        "insurance_numbers": ["11111111"],
    }
    return taro(**{**base, **changes})


def half_width_subject() -> dict[str, Any]:
    """An opt-out subject given in half-width katakana only (no kanji)."""
    return {
        "family_name": None,
        "given_name": None,
        "family_name_kana": "ﾔﾏﾀﾞ",
        "given_name_kana": "ﾀﾛｳ",
        "birth_date": "1980-01-02",
        "sex": "male",
        "postal_code": "100-0001",
        "institution_patient_id": None,
        "deceased_on": None,
    }


async def test_records_of_one_person_from_two_institutions_share_one_pseudonym(
    linked: Linked,
) -> None:
    await linked.receive(taro())
    await linked.receive(
        taro(
            institution_patient_id="9-77",
            family_name="山田",
            given_name="太郎",
            family_name_kana="やまだ",  # hiragana at the second institution
            given_name_kana="タロー",
        ),
        institution=OTHER_INSTITUTION,
    )
    await linked.receive(hanako())
    events = await linked.wait_published(RECORD_LINKED, 3)
    first, second, third = (e.data for e in events)
    assert first.person == second.person != third.person
    assert len(first.person) == 64
    assert second.institution_code == OTHER_INSTITUTION
    assert await linked.stats() == {
        "persons": 2,
        "records": 3,
        "links": 1,
        "blocked": 0,
        "block_entries": 0,
        "possible_open": 0,
        "optout_reviews_open": 0,
        "model_records": 0,
    }


async def test_forwarded_record_carries_demographics_and_no_identity(linked: Linked) -> None:
    identity = taro()
    resources = [
        {
            **condition(),
            "recorder": {"reference": "Practitioner/dr-9", "display": "佐藤一郎"},
            "note": [{"text": "山田太郎さん 千代田区在住"}],
            "identifier": [{"value": "MRN-424242"}],
        }
    ]
    await linked.receive(identity, resources)
    (event,) = await linked.wait_published(RECORD_LINKED, 1)
    data = event.data
    assert event.key == data.person
    assert data.demographics.model_dump(mode="json") == {
        "birth_date": "1980-01-02",
        "sex": "male",
        "postal_code": "100-0001",
        "deceased_on": None,
    }
    (resource,) = data.resources
    assert resource["subject"] == {"reference": f"Patient/{data.person}"}
    assert resource["code"]["coding"][0]["code"] == "I50.0"
    payload = json.dumps(data.model_dump(mode="json"), ensure_ascii=False)
    for value in (
        "山田",
        "太郎",
        "ヤマダ",
        "タロウ",
        "千代田",
        "06130012",
        "P-0001",
        "佐藤",
        "MRN-424242",
        "dr-9",
    ):
        assert value not in payload


async def test_a_record_joining_two_clusters_merges_them_and_names_the_absorbed_pseudonym(
    linked: Linked,
) -> None:
    # A: kanji only; B: kana only, another insurer and address. Nothing ties A to B ...
    a = taro(family_name_kana=None, given_name_kana=None)
    b = taro(
        institution_patient_id="B-1",
        family_name=None,
        given_name=None,
        insurance_numbers=["99990001"],
        postal_code="150-0001",
        address="東京都渋谷区1-1",
    )
    await linked.receive(a)
    await linked.receive(b, institution=OTHER_INSTITUTION)
    first, second = await linked.wait_published(RECORD_LINKED, 2)
    assert first.data.person != second.data.person
    assert (await linked.stats())["persons"] == 2
    # ... until C, with kanji and kana and both insurance numbers, links to both.
    c = taro(
        institution_patient_id="C-1",
        insurance_numbers=["06130012", "99990001"],
        postal_code="150-0001",
        address="東京都渋谷区1-1",
    )
    await linked.receive(c, institution="3312345678")
    events = await linked.wait_published(RECORD_LINKED, 3)
    merged = events[2].data
    assert {merged.person, *merged.merged_from} == {first.data.person, second.data.person}
    assert len(merged.merged_from) == 1
    stats = await linked.stats()
    assert (stats["persons"], stats["records"], stats["links"]) == (1, 3, 2)
    # every record now sits with the survivor
    person = await linked.svc.client.get(f"/v1/persons/{merged.person}", headers=linked.admin)
    assert len(person.json()["records"]) == 3


async def test_the_same_institution_patient_again_stays_with_its_person(linked: Linked) -> None:
    await linked.receive(taro())
    await linked.receive(taro(address="東京都港区1-1", postal_code="105-0001"))
    first, second = await linked.wait_published(RECORD_LINKED, 2)
    assert first.data.person == second.data.person
    assert (await linked.stats())["records"] == 1


async def test_possible_pairs_are_recorded_never_linked_and_an_operator_can_link_them(
    linked: Linked,
) -> None:
    # Same name, birth date and sex; another address and insurer: the review band.
    await linked.receive(taro())
    await linked.receive(
        taro(
            institution_patient_id="X-9",
            postal_code="530-0001",
            address="大阪府大阪市北区1-1",
            insurance_numbers=["27000001"],
        ),
        institution=OTHER_INSTITUTION,
    )
    first, second = await linked.wait_published(RECORD_LINKED, 2)
    assert first.data.person != second.data.person
    pairs = (await linked.svc.client.get("/v1/possible-links", headers=linked.admin)).json()
    assert len(pairs) == 1
    assert pairs[0]["status"] == "open"
    assert linked.ctx.possible_threshold <= pairs[0]["probability"] < linked.ctx.link_threshold

    decided = await linked.svc.client.post(
        f"/v1/possible-links/{pairs[0]['id']}/decision",
        json={"decision": "link"},
        headers=linked.admin,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["person"] == decided.json()["other_person"]
    merge = (await linked.wait_published(RECORD_LINKED, 3))[2].data
    assert merge.resources == []
    assert len(merge.merged_from) == 1
    assert (await linked.stats())["persons"] == 1
    again = await linked.svc.client.post(
        f"/v1/possible-links/{pairs[0]['id']}/decision",
        json={"decision": "distinct"},
        headers=linked.admin,
    )
    assert again.status_code == 409


async def test_optout_with_half_width_kana_subject_matches_the_person_in_kanji_and_katakana(
    linked: Linked,
) -> None:
    await linked.receive(taro())
    await linked.receive(hanako())
    taro_person = (await linked.wait_published(RECORD_LINKED, 2))[0].data.person

    await linked.optout(half_width_subject(), optout_id="opt-1")
    (purged,) = await linked.wait_published(PERSON_PURGED, 1)
    assert (purged.key, purged.data.person, purged.data.optout_id) == (
        taro_person,
        taro_person,
        "opt-1",
    )
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    assert applied.key == "opt-1"
    assert (applied.data.service, applied.data.matched) == ("linkage", 1)
    assert applied.data.purged == {"persons": 1, "vault_records": 0}
    stats = await linked.stats()
    assert (stats["blocked"], stats["records"]) == (1, 2)  # `stop` keeps the vault

    # Future records of that person are neither linked nor forwarded; others still are.
    await linked.receive(taro(institution_patient_id="Z-1"), institution=OTHER_INSTITUTION)
    await linked.receive(hanako(institution_patient_id="Z-2"), institution=OTHER_INSTITUTION)
    events = await linked.wait_published(RECORD_LINKED, 3)
    assert [e.data.person for e in events[2:]] != [taro_person]
    assert len(linked.published(RECORD_LINKED)) == 3
    assert (await linked.stats())["records"] == 3


async def test_stop_and_delete_removes_the_persons_identity_from_the_vault(
    linked: Linked,
) -> None:
    await linked.receive(taro())
    await linked.receive(taro(institution_patient_id="Q-5"), institution=OTHER_INSTITUTION)
    await linked.receive(hanako())
    await linked.wait_published(RECORD_LINKED, 3)
    await linked.optout(half_width_subject(), optout_id="opt-del", action="stop_and_delete")
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    assert applied.data.purged == {"persons": 1, "vault_records": 2}
    (purged,) = await linked.wait_published(PERSON_PURGED, 1)
    assert purged.data.action == "stop_and_delete"
    stats = await linked.stats()
    assert (stats["records"], stats["blocked"], stats["block_entries"]) == (1, 1, 1)
    person = await linked.svc.client.get(f"/v1/persons/{purged.data.person}", headers=linked.admin)
    assert person.json()["records"] == []
    # the same person arriving again is caught by the block entry and not stored
    await linked.receive(taro(institution_patient_id="R-1"), institution="4412345678")
    assert len(linked.published(RECORD_LINKED)) == 3
    assert (await linked.stats())["records"] == 1


async def test_ambiguous_optout_goes_to_review_unacknowledged_until_an_operator_resolves(
    linked: Linked,
) -> None:
    # Two people with the same name, birth date and sex, in different places and insurers.
    await linked.receive(taro())
    await linked.receive(
        taro(
            institution_patient_id="X-9",
            postal_code="530-0001",
            address="大阪府大阪市北区1-1",
            insurance_numbers=["27000001"],
        ),
        institution=OTHER_INSTITUTION,
    )
    first, _ = await linked.wait_published(RECORD_LINKED, 2)
    subject = {**half_width_subject(), "family_name": "山田", "given_name": "太郎"}
    subject["postal_code"] = None  # nothing tells the two apart
    await linked.optout(subject, optout_id="opt-amb")

    assert linked.published(LINKAGE_OPTOUT_APPLIED) == []
    assert linked.published(PERSON_PURGED) == []
    reviews = (await linked.svc.client.get("/v1/optout-reviews", headers=linked.admin)).json()
    assert [r["optout_id"] for r in reviews] == ["opt-amb"]
    candidates = {c["person"] for c in reviews[0]["candidates"]}
    assert len(candidates) == 2
    assert "山田" not in json.dumps(reviews, ensure_ascii=False)
    assert (await linked.stats())["optout_reviews_open"] == 1

    # The operator confirms which person it is: applied and acknowledged now.
    target = await linked.svc.client.get(f"/v1/persons/{first.data.person}", headers=linked.admin)
    key = target.json()["person_key"]
    assert key in candidates
    resolved = await linked.svc.client.post(
        "/v1/optout-reviews/opt-amb/resolve", json={"persons": [key]}, headers=linked.admin
    )
    assert resolved.status_code == 200, resolved.text
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    assert applied.data.matched == 1
    (purged,) = linked.published(PERSON_PURGED)
    assert purged.data.person == first.data.person
    again = await linked.svc.client.post(
        "/v1/optout-reviews/opt-amb/resolve", json={"persons": []}, headers=linked.admin
    )
    assert again.status_code == 409
    # redelivery of the same request changes nothing
    await linked.optout(subject, optout_id="opt-amb")
    assert len(linked.published(PERSON_PURGED)) == 1


async def test_block_entry_for_an_unknown_subject_is_applied_to_a_later_record(
    linked: Linked,
) -> None:
    await linked.receive(hanako())
    await linked.optout(half_width_subject(), optout_id="opt-early")
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    assert applied.data.matched == 0  # nobody yet: the optout service acks anonymizer at once
    assert (await linked.stats())["block_entries"] == 1

    await linked.receive(taro())  # their first record arrives afterwards
    assert len(linked.published(RECORD_LINKED)) == 1  # only hanako's
    stats = await linked.stats()
    assert (stats["blocked"], stats["records"]) == (1, 2)
    assert linked.published(PERSON_PURGED) == []  # nothing of theirs ever went downstream


async def test_stop_and_delete_block_entry_keeps_a_later_record_out_of_the_vault(
    linked: Linked,
) -> None:
    await linked.optout(half_width_subject(), optout_id="opt-d", action="stop_and_delete")
    await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    await linked.receive(taro())
    assert linked.published(RECORD_LINKED) == []
    assert (await linked.stats())["records"] == 0


async def test_institution_scope_blocks_only_that_institutions_records(linked: Linked) -> None:
    await linked.receive(taro())
    await linked.receive(taro(institution_patient_id="O-1"), institution=OTHER_INSTITUTION)
    await linked.wait_published(RECORD_LINKED, 2)
    subject = {**half_width_subject(), "institution_patient_id": "P-0001"}
    await linked.optout(
        subject,
        optout_id="opt-inst",
        action="stop_and_delete",
        scope="institution",
        institution=INSTITUTION,
    )
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    assert applied.data.purged == {"persons": 1, "vault_records": 1}
    (purged,) = linked.published(PERSON_PURGED)
    assert purged.data.model_extra == {"institution_code": INSTITUTION}
    # the other institution's records still flow; this institution's do not
    await linked.receive(taro(institution_patient_id="O-1"), institution=OTHER_INSTITUTION)
    await linked.receive(taro(institution_patient_id="P-0003"))
    events = linked.published(RECORD_LINKED)
    assert [e.data.institution_code for e in events[2:]] == [OTHER_INSTITUTION]


async def test_operator_api_needs_the_admin_scope(linked: Linked) -> None:
    client = linked.svc.client
    assert (await client.get("/v1/stats")).status_code == 401
    intake = linked.svc.auth("institution:1312345678", ["intake:submit"])
    assert (await client.get("/v1/stats", headers=intake)).status_code == 403
    assert (await client.get("/v1/persons/nobody", headers=linked.admin)).status_code == 404


async def test_person_view_and_split_are_written_to_the_operator_log(linked: Linked) -> None:
    await linked.receive(taro())
    await linked.receive(taro(institution_patient_id="S-2"), institution=OTHER_INSTITUTION)
    (event, _) = await linked.wait_published(RECORD_LINKED, 2)
    client = linked.svc.client
    person = (await client.get(f"/v1/persons/{event.data.person}", headers=linked.admin)).json()
    assert person["pseudonym"] == event.data.person
    assert {r["identity"]["family_name"] for r in person["records"]} == {"山田"}
    record_ids = [r["record_id"] for r in person["records"]]

    refused = await client.post(
        f"/v1/persons/{person['person_key']}/split",
        json={"record_ids": record_ids},
        headers=linked.admin,
    )
    assert refused.status_code == 422
    split = await client.post(
        f"/v1/persons/{person['person_key']}/split",
        json={"record_ids": record_ids[1:]},
        headers=linked.admin,
    )
    assert split.status_code == 201, split.text
    assert split.json()["moved"] == 1
    stats = await linked.stats()
    assert (stats["persons"], stats["records"]) == (2, 2)

    async with linked.svc.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(operator_log).order_by(operator_log.c.id))).all()
        stored = (await conn.execute(select(records.c.identity))).scalars().all()
    assert [(r.principal, r.action) for r in rows] == [
        ("operator:ops-1", "view_person"),
        ("operator:ops-1", "split_person"),
    ]
    assert all(t.startswith("v1.") and "山田" not in t for t in stored)  # encrypted at rest


async def test_records_arriving_in_one_batch_link_and_merge_among_themselves(
    linked: Linked,
) -> None:
    a = taro(family_name_kana=None, given_name_kana=None)
    b = taro(
        institution_patient_id="B-1",
        family_name=None,
        given_name=None,
        insurance_numbers=["99990001"],
        postal_code="150-0001",
        address="東京都渋谷区1-1",
    )
    c = taro(
        institution_patient_id="C-1",
        insurance_numbers=["06130012", "99990001"],
        postal_code="150-0001",
        address="東京都渋谷区1-1",
    )
    await linked.send_together(
        linked.record(a),
        linked.record(b, institution=OTHER_INSTITUTION),
        linked.record(hanako()),
        linked.record(c, institution="3312345678"),
        linked.record(a),  # the same institution patient again, in the same batch
    )
    events = linked.published(RECORD_LINKED)
    assert len(events) == 5
    first, second, third, fourth, fifth = (e.data for e in events)
    assert first.person != second.person
    assert {fourth.person, *fourth.merged_from} == {first.person, second.person}
    assert fifth.person == fourth.person
    assert third.person not in {first.person, second.person, fourth.person}
    stats = await linked.stats()
    assert (stats["persons"], stats["records"], stats["links"]) == (2, 4, 2)


async def test_an_optout_in_the_same_batch_as_the_persons_records_still_purges_them(
    linked: Linked,
) -> None:
    # Topics are not ordered against each other: whichever is applied first, the person ends
    # up blocked and purged, and nothing of theirs that arrives later is forwarded.
    await linked.send_together(
        linked.record(taro()),
        linked.record(hanako()),
        linked.optout_event(half_width_subject(), optout_id="opt-b", action="stop_and_delete"),
        linked.record(taro(institution_patient_id="T-2"), institution=OTHER_INSTITUTION),
    )
    (applied,) = await linked.wait_published(LINKAGE_OPTOUT_APPLIED, 1)
    await linked.wait_published(RECORD_LINKED, 1)
    forwarded = {e.data.person for e in linked.published(RECORD_LINKED)}
    purged = {e.data.person for e in linked.published(PERSON_PURGED)}
    assert applied.data.matched == len(purged) <= 1
    assert (await linked.stats())["records"] == 1  # only hanako stays in the vault
    await linked.receive(taro(institution_patient_id="late"), institution="4412345678")
    assert {e.data.person for e in linked.published(RECORD_LINKED)} == forwarded
    assert forwarded - purged == {
        e.data.person
        for e in linked.published(RECORD_LINKED)
        if e.data.institution_code == INSTITUTION and e.data.demographics.sex == "female"
    }


async def test_a_batch_scores_its_candidates_together_not_one_pair_at_a_time(
    linked: Linked, monkeypatch: pytest.MonkeyPatch
) -> None:
    scalar = MatchModel.probability
    calls: list[int] = []

    def counted(self: MatchModel, a: Any, b: Any) -> float:
        calls.append(1)
        return scalar(self, a, b)

    monkeypatch.setattr(MatchModel, "probability", counted)
    await linked.receive(taro())
    b = taro(institution_patient_id="B-1", insurance_numbers=["99990001"])
    c = taro(institution_patient_id="C-1", postal_code="150-0001", address="東京都渋谷区1-1")
    await linked.send_together(
        linked.record(b, institution=OTHER_INSTITUTION),
        linked.record(c, institution="3312345678"),
    )
    events = linked.published(RECORD_LINKED)
    assert len({e.data.person for e in events}) == 1  # all three linked: pairs were scored
    assert calls == []  # ... by the batch's vectorized scoring, never the scalar path


async def test_readyz_answers_not_ready_until_the_match_index_is_loaded(linked: Linked) -> None:
    client, replica = linked.svc.client, linked.svc.context.replica
    await replica.loaded.wait()  # the start's load of an empty vault
    assert (await client.get("/readyz")).json()["checks"]["index"] == "ok"
    replica.loaded.clear()  # as while `index-load` runs at start
    try:
        waiting = await client.get("/readyz")
        assert waiting.status_code == 503
        assert waiting.json()["checks"]["index"].startswith("loading (")
    finally:
        replica.loaded.set()
    assert (await client.get("/readyz")).status_code == 200
