"""The public register shows exactly the approved applications, five columns, newest first,
paged, without authentication; the promptness statistics use the injectable clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Review

COLUMNS = {"no", "approved_on", "title", "data_items", "user_category"}


async def _decided(review: Review, title: str, decision: str) -> str:
    application_id = await review.apply(review.application(title=title))
    vote = {"approved": "approve", "rejected": "reject", "revise": "revise"}[decision]
    await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"], vote=vote)
    r = await review.decide(application_id, decision)
    assert r.status_code == 200, r.text
    return application_id


async def test_register_lists_exactly_the_approved_ones_and_no_private_field(
    review: Review,
) -> None:
    await _decided(review, "Approved study A", "approved")
    await _decided(review, "Rejected study", "rejected")
    await _decided(review, "Study to revise", "revise")
    await review.apply(review.application(title="Pending study"))
    review.clock.advance(days=1)
    await _decided(review, "Approved study B", "approved")

    r = await review.client.get("/v1/public/approvals")  # no token at all
    assert r.status_code == 200
    assert r.headers["x-total-count"] == "2"
    entries = r.json()
    assert entries == [
        {
            "no": "2026-0002",
            "approved_on": "2026-04-02",
            "title": "Approved study B",
            "data_items": ["ehr", "dpc"],
            "user_category": "academia",
        },
        {
            "no": "2026-0001",
            "approved_on": "2026-04-01",
            "title": "Approved study A",
            "data_items": ["ehr", "dpc"],
            "user_category": "academia",
        },
    ]
    text = r.text
    for private in ("Example University", "researcher:", "committee:", "I50", "readmission of"):
        assert private not in text
    assert all(set(entry) == COLUMNS for entry in entries)


async def test_register_is_paged_newest_first_and_numbers_restart_each_year(
    review: Review,
) -> None:
    review.clock.now = datetime(2026, 12, 31, 14, 0, tzinfo=UTC)  # 23:00 on 31 Dec in Tokyo
    await _decided(review, "Last of 2026", "approved")
    review.clock.now = datetime(2026, 12, 31, 15, 30, tzinfo=UTC)  # 00:30 on 1 Jan 2027 in Tokyo
    await _decided(review, "First of 2027", "approved")
    await _decided(review, "Second of 2027", "approved")

    first = (await review.client.get("/v1/public/approvals", params={"limit": 2})).json()
    assert [(e["no"], e["approved_on"]) for e in first] == [
        ("2027-0002", "2027-01-01"),
        ("2027-0001", "2027-01-01"),
    ]
    rest = await review.client.get("/v1/public/approvals", params={"limit": 2, "offset": 2})
    assert [(e["no"], e["title"]) for e in rest.json()] == [("2026-0001", "Last of 2026")]
    assert rest.headers["x-total-count"] == "3"
    bad = await review.client.get("/v1/public/approvals", params={"limit": 1000})
    assert bad.status_code == 422


async def test_stats_give_time_to_decision_and_median_over_the_last_90_days(
    review: Review,
) -> None:
    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    review.clock.now = start
    old = await review.apply()  # decided after 2 days, but more than 90 days before "now"
    review.clock.advance(days=2)
    await review.reviews(old, ["m-nat-1", "m-hum-1", "m-pub-1"])
    assert (await review.decide(old, "approved")).status_code == 200

    durations = {}
    for days in (10, 4, 6):
        review.clock.now = datetime(2026, 5, 1, tzinfo=UTC)
        application_id = await review.apply()
        review.clock.advance(days=days)
        await review.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"], vote="reject")
        assert (await review.decide(application_id, "rejected")).status_code == 200
        durations[application_id] = float(days)
    pending = await review.apply()  # no decision yet: not counted

    review.clock.now = datetime(2026, 5, 20, tzinfo=UTC)
    r = await review.client.get("/v1/stats", headers=review.admin())
    assert r.status_code == 200, r.text
    stats = r.json()
    assert stats["window_days"] == 90
    assert stats["decided"] == 3
    assert stats["median_days_to_decision"] == 6.0
    assert {a["application_id"]: a["days"] for a in stats["applications"]} == durations
    assert old not in {a["application_id"] for a in stats["applications"]}
    assert pending not in {a["application_id"] for a in stats["applications"]}
    # newest decision first, paged
    page = (
        await review.client.get("/v1/stats", params={"limit": 1}, headers=review.admin())
    ).json()
    assert [a["days"] for a in page["applications"]] == [10.0]
    assert page["total"] == 3
    assert page["median_days_to_decision"] == 6.0

    # 90 days on, the decision of 2026-01-07 is in no window; move back and it is
    review.clock.now = datetime(2026, 4, 1, tzinfo=UTC)
    back = (await review.client.get("/v1/stats", headers=review.admin())).json()
    assert [a["application_id"] for a in back["applications"]] == [old]
    assert back["median_days_to_decision"] == 2.0


async def test_stats_with_no_decisions_have_no_median(review: Review) -> None:
    stats = (await review.client.get("/v1/stats", headers=review.admin())).json()
    assert stats["decided"] == 0
    assert stats["median_days_to_decision"] is None
