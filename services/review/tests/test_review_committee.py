"""The committee's rules over the API: conflicts of interest, one review per round, the
decision rule's edge cases, certified users and their expiry day, and input validation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Review

PSEUDONYMIZED = {"dataset": {"kind": "pseudonymized"}}


async def test_member_affiliated_with_the_applicants_organization_cannot_review(
    review: Review,
) -> None:
    application_id = await review.apply()  # Example University; m-pub-2 works there
    r = await review.review(application_id, "m-pub-2")
    assert r.status_code == 409
    assert r.json()["code"] == "conflict_of_interest"
    assert "Example" not in r.json()["message"]  # the message does not echo the organization
    assert await review.status(application_id) == "submitted"  # nothing changed
    # the same member may review another organization's application
    other = await review.apply(
        review.application(organization=review.OTHER_ORG), rid="r2", organization=review.OTHER_ORG
    )
    assert (await review.review(other, "m-pub-2")).status_code == 201


async def test_one_review_per_member_per_round(review: Review) -> None:
    application_id = await review.apply()
    assert (await review.review(application_id, "m-hum-1")).status_code == 201
    r = await review.review(application_id, "m-hum-1", vote="reject")
    assert r.status_code == 409
    assert r.json()["code"] == "already_reviewed"
    body = (
        await review.client.get(f"/v1/applications/{application_id}", headers=review.admin())
    ).json()
    assert [(x["member_id"], x["vote"]) for x in body["reviews"]] == [("m-hum-1", "approve")]


async def test_only_committee_members_review(review: Review) -> None:
    application_id = await review.apply()
    r = await review.client.post(
        f"/v1/applications/{application_id}/reviews",
        json={"criteria": review.ALL_PASS, "vote": "approve"},
        headers=review.member("not-on-committee"),
    )
    assert r.status_code == 403
    assert r.json()["code"] == "not_a_committee_member"
    r = await review.client.post(
        f"/v1/applications/{application_id}/reviews",
        json={"criteria": review.ALL_PASS, "vote": "approve"},
        headers=review.svc.auth("operator:ops1", ["review:decide"]),
    )
    assert r.status_code == 403


async def test_review_needs_all_five_criteria_and_a_known_vote(review: Review) -> None:
    application_id = await review.apply()
    partial = {k: v for k, v in review.ALL_PASS.items() if k != "benefit_management"}
    r = await review.client.post(
        f"/v1/applications/{application_id}/reviews",
        json={"criteria": partial, "vote": "approve"},
        headers=review.member("m-hum-1"),
    )
    assert r.status_code == 422
    assert "criteria.benefit_management" in r.json()["message"]
    r = await review.review(application_id, "m-hum-1", vote="abstain")
    assert r.status_code == 422
    assert "vote" in r.json()["message"]


async def test_missing_general_public_member_cannot_approve(review: Review) -> None:
    application_id = await review.apply()
    await review.reviews(application_id, ["m-nat-1", "m-nat-2", "m-hum-1", "m-hum-2"])
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "expertise_group_missing"
    assert "general_public" in r.json()["message"]
    assert await review.status(application_id) == "under_review"
    assert await review.decided_events() == []
    # once a general-public member has reviewed, the same decision is allowed
    await review.reviews(application_id, ["m-pub-1"])
    assert (await review.decide(application_id, "approved")).status_code == 200


async def test_majority_failing_a_criterion_cannot_approve(review: Review) -> None:
    application_id = await review.apply()
    failed = {**review.ALL_PASS, "publication_fairness": False}
    # all three vote approve, but two of three fail a criterion
    for member_id, criteria in (("m-nat-1", failed), ("m-hum-1", failed), ("m-pub-1", None)):
        r = await review.review(application_id, member_id, "approve", criteria)
        assert r.status_code == 201
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "criterion_failed"
    assert "publication_fairness" in r.json()["message"]
    # the votes carry a request to revise instead
    r = await review.decide(application_id)
    assert r.status_code == 200
    assert r.json()["status"] == "revise"


async def test_quorum_is_a_setting_and_counts_only_this_rounds_reviews(review: Review) -> None:
    review.svc.context.rules.quorum = 4
    application_id = await review.apply()
    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"])
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "quorum_not_met"
    assert "4" in r.json()["message"]
    r = await review.decide(application_id, "rejected")  # any decision needs the quorum
    assert r.status_code == 409
    assert r.json()["code"] == "quorum_not_met"
    await review.reviews(application_id, ["m-hum-2"])
    assert (await review.decide(application_id, "approved")).status_code == 200


async def test_majority_of_approve_votes_is_needed(review: Review) -> None:
    application_id = await review.apply()
    await review.reviews(application_id, ["m-nat-1", "m-hum-1"], vote="approve")
    await review.reviews(application_id, ["m-pub-1", "m-nat-2"], vote="revise")
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "no_majority_to_approve"
    r = await review.client.post(
        f"/v1/applications/{application_id}/decision",
        json={"status": "revise"},  # `status` is accepted for `decision`
        headers=review.chair(),
    )
    assert r.json()["status"] == "revise"


# -- certified users ---------------------------------------------------------------------------


async def test_pseudonymized_from_an_uncertified_organization_is_422(review: Review) -> None:
    r = await review.client.post(
        "/v1/applications",
        json=review.application(**PSEUDONYMIZED),
        headers=review.researcher(),
    )
    assert r.status_code == 422
    assert r.json()["code"] == "certification_not_certified"
    assert r.json()["message"].startswith("organization:")
    # an anonymized dataset needs no certification
    assert (
        await review.client.post(
            "/v1/applications", json=review.application(), headers=review.researcher()
        )
    ).status_code == 201


async def test_certification_is_valid_on_its_expiry_day_and_refused_the_day_after(
    review: Review,
) -> None:
    await review.certify("EXAMPLE UNIVERSITY", "2025-04-01", "2026-03-31")
    # 2026-03-31 23:59 in Tokyo (14:59 UTC): the last day of validity
    review.clock.now = datetime(2026, 3, 31, 14, 59, tzinfo=UTC)
    on_the_day = await review.client.post(
        "/v1/applications", json=review.application(**PSEUDONYMIZED), headers=review.researcher()
    )
    assert on_the_day.status_code == 201, on_the_day.text
    # 2026-04-01 00:00 in Tokyo (15:00 UTC the same UTC day): expired
    review.clock.now = datetime(2026, 3, 31, 15, 0, tzinfo=UTC)
    after = await review.client.post(
        "/v1/applications", json=review.application(**PSEUDONYMIZED), headers=review.researcher()
    )
    assert after.status_code == 422
    assert after.json()["code"] == "certification_expired"

    # the application made on the day cannot be approved once the certification has expired
    application_id = on_the_day.json()["application_id"]
    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"])
    r = await review.decide(application_id, "approved")
    assert r.status_code == 409
    assert r.json()["code"] == "certification_expired"
    # a renewal lets it through
    await review.certify("Example University", "2026-04-01", "2029-03-31")
    r = await review.decide(application_id, "approved")
    assert r.status_code == 200
    assert r.json()["status"] == "approved"


async def test_certification_not_yet_started_is_refused(review: Review) -> None:
    await review.certify(review.ORG, "2026-05-01", "2029-04-30")
    r = await review.client.post(
        "/v1/applications", json=review.application(**PSEUDONYMIZED), headers=review.researcher()
    )
    assert r.status_code == 422
    assert r.json()["code"] == "certification_not_yet_valid"


async def test_certified_user_dates_are_validated(review: Review) -> None:
    r = await review.client.post(
        "/v1/certified-users",
        json={"organization": "O", "certified_on": "2026-04-01", "expires_on": "2026-03-31"},
        headers=review.admin(),
    )
    assert r.status_code == 422
    assert "expires_on" in r.json()["message"]
    await review.certify("Org A", "2026-01-01", "2027-01-01")
    listed = await review.client.get("/v1/certified-users", headers=review.admin())
    assert [c["organization"] for c in listed.json()["items"]] == ["Org A"]


async def test_committee_members_are_unique_and_listed(review: Review) -> None:
    r = await review.client.post(
        "/v1/committee/members",
        json={"member_id": "m-nat-1", "name": "Again", "expertise": "natural_science"},
        headers=review.admin(),
    )
    assert r.status_code == 409
    assert r.json()["code"] == "member_exists"
    r = await review.client.post(
        "/v1/committee/members",
        json={"member_id": "m-x", "name": "X", "expertise": "astrology"},
        headers=review.admin(),
    )
    assert r.status_code == 422
    assert "expertise" in r.json()["message"]
    page = await review.client.get(
        "/v1/committee/members", params={"limit": 2, "offset": 4}, headers=review.admin()
    )
    assert page.json()["total"] == 6
    assert [m["member_id"] for m in page.json()["items"]] == ["m-pub-1", "m-pub-2"]
    assert page.json()["items"][1]["expertise"] == "general_public"


# -- applications: validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dataset": {"resources": ["Patient", "Claim"]}}, "body.dataset.resources.1"),
        ({"dataset": {"resources": []}}, "body.dataset.resources"),
        ({"dataset": {"resources": ["Patient", "Patient"]}}, "resources"),
        ({"dataset": {"cohort": {"condition_codes": ["I50*", "*50"]}}}, "condition_codes.1"),
        ({"dataset": {"cohort": {"condition_codes": ["I 50"]}}}, "condition_codes.0"),
        ({"dataset": {"cohort": {"condition_codes": ["*"]}}}, "condition_codes.0"),
        ({"dataset": {"cohort": {"conditon_codes": ["I50*"]}}}, "conditon_codes"),
        (
            {"dataset": {"cohort": {"period": {"start": "2025-01-01", "end": "2024-01-01"}}}},
            "end",
        ),
        ({"dataset": {"kind": "raw"}}, "body.dataset.kind"),
        ({"dataset": {"k": 1}}, "body.dataset.k"),
        ({"user_category": "hobbyist"}, "body.user_category"),
        ({"data_items": ["ehr", "genome"]}, "body.data_items.1"),
        ({"data_items": []}, "body.data_items"),
        ({"title": ""}, "body.title"),
        ({"purpose": None}, "body.purpose"),
    ],
)
async def test_invalid_applications_are_422_naming_the_field(
    review: Review, changes: dict[str, Any], field: str
) -> None:
    body = review.application()
    for key, value in changes.items():
        if key == "dataset":
            for dkey, dvalue in value.items():
                if dkey == "cohort":
                    body["dataset"]["cohort"] = {**body["dataset"]["cohort"], **dvalue}
                else:
                    body["dataset"][dkey] = dvalue
        else:
            body[key] = value
    r = await review.client.post("/v1/applications", json=body, headers=review.researcher())
    assert r.status_code == 422, r.text
    assert field in r.json()["message"]
    assert "Claim" not in r.json()["message"]
    assert "genome" not in r.json()["message"]
    listed = await review.client.get("/v1/applications", headers=review.admin())
    assert listed.json()["total"] == 0  # nothing stored


async def test_applicant_applies_for_the_organization_in_the_token(review: Review) -> None:
    r = await review.client.post(
        "/v1/applications",
        json=review.application(organization=review.OTHER_ORG),
        headers=review.researcher("r1", review.ORG),
    )
    assert r.status_code == 403
    assert r.json()["code"] == "organization_mismatch"
    r = await review.client.post(
        "/v1/applications",
        json=review.application(),
        headers=review.svc.auth("researcher:r1", ["review:apply"]),
    )
    assert r.status_code == 403
    assert r.json()["code"] == "organization_claim_missing"
