"""Applications move through the workflow over the API; illegal moves are 409; every move is
recorded with its time; applicants see only their own; auth is 401/403."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Review

OTHER_ORG = "Sample Pharma KK"
APPLICATION = "<application>"  # replaced by `review.application()` in the test


async def test_submit_review_approve_records_every_transition_with_time_and_actor(
    review: Review,
) -> None:
    application_id = await review.apply()
    assert await review.status(application_id) == "submitted"
    review.clock.advance(days=2)
    first = await review.review(application_id, "m-nat-1")
    assert first.status_code == 201
    assert first.json()["status"] == "under_review"
    await review.reviews(application_id, ["m-hum-1", "m-pub-1"])
    review.clock.advance(days=3)
    decided = await review.decide(application_id, "approved")
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"
    assert decided.json()["approval"]["no"] == "2026-0001"

    body = (
        await review.client.get(f"/v1/applications/{application_id}", headers=review.admin())
    ).json()
    moves = [(t["from_status"], t["to_status"], t["actor"], t["at"]) for t in body["transitions"]]
    assert moves == [
        (None, "submitted", "researcher:r1", "2026-04-01T01:00:00Z"),
        ("submitted", "under_review", "committee:m-nat-1", "2026-04-03T01:00:00Z"),
        ("under_review", "approved", "committee:m-nat-1", "2026-04-06T01:00:00Z"),
    ]
    assert [r["member_id"] for r in body["reviews"]] == ["m-nat-1", "m-hum-1", "m-pub-1"]


async def test_illegal_transitions_are_409_and_change_nothing(review: Review) -> None:
    application_id = await review.apply()
    # a decision before any review: submitted → approved is not a transition
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "illegal_transition"
    # resubmitting what was not sent back for revision
    r = await review.client.put(
        f"/v1/applications/{application_id}", json=review.application(), headers=review.researcher()
    )
    assert r.status_code == 409
    assert r.json()["code"] == "illegal_transition"
    assert await review.status(application_id) == "submitted"

    start = await review.client.post(
        f"/v1/applications/{application_id}/start-review", headers=review.chair()
    )
    assert start.status_code == 200
    assert start.json()["status"] == "under_review"
    again = await review.client.post(
        f"/v1/applications/{application_id}/start-review", headers=review.chair()
    )
    assert again.status_code == 409
    assert again.json()["code"] == "illegal_transition"

    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"], vote="reject")
    assert (await review.decide(application_id, "rejected")).json()["status"] == "rejected"
    # final: no more reviews, decisions or resubmissions
    r = await review.review(application_id, "m-nat-2")
    assert r.status_code == 409
    assert r.json()["code"] == "not_reviewable"
    for decision in ("approved", "revise", "rejected"):
        r = await review.decide(application_id, decision)
        assert r.status_code == 409
        assert r.json()["code"] == "illegal_transition"
    r = await review.client.put(
        f"/v1/applications/{application_id}", json=review.application(), headers=review.researcher()
    )
    assert r.status_code == 409
    assert await review.status(application_id) == "rejected"


async def test_revise_then_resubmit_starts_a_new_round_with_fresh_reviews(
    review: Review,
) -> None:
    application_id = await review.apply()
    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"], vote="revise")
    r = await review.decide(application_id, "revise")
    assert r.status_code == 200
    assert r.json() == {
        **r.json(),
        "status": "revise",
        "round": 1,
        "approval": None,
    }
    revised = review.application(title="Heart failure readmission (revised)")
    r = await review.client.put(
        f"/v1/applications/{application_id}", json=revised, headers=review.researcher()
    )
    assert r.status_code == 200
    assert r.json()["status"] == "resubmitted"
    assert r.json()["round"] == 2

    # round 1's reviews do not count in round 2, and the same members may review again
    assert (await review.decide(application_id, "approved")).status_code == 409
    r = await review.review(application_id, "m-nat-1")
    assert r.status_code == 201
    assert r.json()["round"] == 2
    assert r.json()["status"] == "under_review"
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "quorum_not_met"
    await review.reviews(application_id, ["m-hum-1", "m-pub-1"])
    r = await review.decide(application_id)  # no body: the decision the votes carry
    assert r.status_code == 200
    assert r.json()["status"] == "approved"

    body = (
        await review.client.get(f"/v1/applications/{application_id}", headers=review.admin())
    ).json()
    assert body["title"] == "Heart failure readmission (revised)"
    assert [(t["from_status"], t["to_status"], t["round"]) for t in body["transitions"]] == [
        (None, "submitted", 1),
        ("submitted", "under_review", 1),
        ("under_review", "revise", 1),
        ("revise", "resubmitted", 2),
        ("resubmitted", "under_review", 2),
        ("under_review", "approved", 2),
    ]
    events = await review.decided_events()
    assert [(e.data.application_id, e.data.decision) for e in events] == [
        (application_id, "revise"),
        (application_id, "approved"),
    ]


async def test_approval_publishes_the_dataset_spec_and_the_applicant(review: Review) -> None:
    application_id = await review.approve()
    (event,) = await review.decided_events()
    assert event.type == "kiban.review.application-decided.v1"
    assert event.key == application_id
    assert event.data.decision == "approved"
    assert event.data.applicant == "researcher:r1"
    assert event.data.organization == "Example University"
    assert event.data.user_category == "academia"
    spec = event.data.dataset
    assert (spec.kind, spec.resources, spec.k) == (
        "anonymized",
        ["Patient", "Condition", "Encounter"],
        5,
    )
    assert spec.cohort.condition_codes == ["I50*"]
    assert spec.cohort.period is not None
    assert str(spec.cohort.period.end) == "2024-12-31"


async def test_applicant_sees_own_applications_only(review: Review) -> None:
    mine = await review.apply(rid="r1")
    theirs = await review.apply(
        review.application(organization=OTHER_ORG), rid="r2", organization=OTHER_ORG
    )
    r = await review.client.get(f"/v1/applications/{mine}", headers=review.researcher("r1"))
    assert r.status_code == 200
    assert r.json()["reviews"] is None  # deliberations stay with the committee
    assert all(t["actor"] is None for t in r.json()["transitions"])
    r = await review.client.get(f"/v1/applications/{theirs}", headers=review.researcher("r1"))
    assert r.status_code == 404
    assert r.json()["code"] == "application_not_found"
    r = await review.client.get("/v1/applications/nope", headers=review.researcher("r1"))
    assert r.status_code == 404

    listed = await review.client.get("/v1/applications", headers=review.researcher("r1"))
    assert [a["application_id"] for a in listed.json()["items"]] == [mine]
    everything = await review.client.get("/v1/applications", headers=review.member("m-hum-1"))
    assert {a["application_id"] for a in everything.json()["items"]} == {mine, theirs}
    assert everything.json()["total"] == 2

    # nor can another researcher resubmit it
    r = await review.client.put(
        f"/v1/applications/{mine}",
        json=review.application(organization=OTHER_ORG),
        headers=review.researcher("r2", OTHER_ORG),
    )
    assert r.status_code == 404


async def test_application_list_is_paged(review: Review) -> None:
    ids = []
    for _ in range(3):
        ids.append(await review.apply())
        review.clock.advance(minutes=1)
    page = await review.client.get(
        "/v1/applications", params={"limit": 2, "offset": 1}, headers=review.researcher()
    )
    assert page.json()["total"] == 3
    assert [a["application_id"] for a in page.json()["items"]] == [ids[1], ids[0]]
    r = await review.client.get("/v1/applications", params={"limit": 0}, headers=review.admin())
    assert r.status_code == 422


CALLS: list[tuple[str, str, Any, str]] = [
    (
        "POST",
        "/v1/committee/members",
        {"member_id": "x", "name": "X", "expertise": "general_public"},
        "admin",
    ),
    ("GET", "/v1/committee/members", None, "admin"),
    (
        "POST",
        "/v1/certified-users",
        {"organization": "O", "certified_on": "2026-01-01", "expires_on": "2027-01-01"},
        "admin",
    ),
    ("GET", "/v1/certified-users", None, "admin"),
    ("POST", "/v1/applications", APPLICATION, "review:apply"),
    ("GET", "/v1/applications", None, "review:apply"),
    ("GET", "/v1/applications/abc", None, "review:apply"),
    ("PUT", "/v1/applications/abc", APPLICATION, "review:apply"),
    (
        "POST",
        "/v1/applications/abc/reviews",
        {"criteria": "<all-pass>", "vote": "approve"},
        "review:decide",
    ),
    ("POST", "/v1/applications/abc/start-review", None, "review:chair"),
    ("POST", "/v1/applications/abc/decision", None, "review:chair"),
    ("GET", "/v1/stats", None, "admin"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), CALLS)
async def test_without_token_401_and_without_scope_403(
    review: Review, method: str, path: str, body: Any, scope: str
) -> None:
    if body == APPLICATION:
        body = review.application()
    elif body and body.get("criteria"):
        body = {**body, "criteria": review.ALL_PASS}
    r = await review.client.request(method, path, json=body)
    assert r.status_code == 401
    assert r.json()["code"] == "missing_token"
    r = await review.client.request(
        method, path, json=body, headers={"Authorization": "Bearer not-a-token"}
    )
    assert r.status_code == 401
    wrong = "patient:p1" if scope != "admin" else "researcher:r9"
    headers = review.svc.auth(wrong, ["optout:self", "release:download"], {"organization": "O"})
    r = await review.client.request(method, path, json=body, headers=headers)
    assert r.status_code == 403, r.text


async def test_a_committee_member_without_chair_scope_cannot_decide(review: Review) -> None:
    application_id = await review.apply()
    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"])
    r = await review.client.post(
        f"/v1/applications/{application_id}/decision", headers=review.member("m-hum-1")
    )
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient_scope"
    assert await review.status(application_id) == "under_review"
