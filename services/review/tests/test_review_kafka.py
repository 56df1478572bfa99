"""On PostgreSQL and a real Kafka broker: decisions reach a Kafka consumer through the outbox,
and concurrent deciders and reviewers cannot break numbering or the one-review rule."""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kiban_common.bus import KafkaTransport
from kiban_common.events import APPLICATION_DECIDED, ApplicationDecidedV1, Event, decode
from kiban_review.main import create_app
from kiban_review.settings import ReviewSettings
from kiban_testing import RunningService, embedded_settings, running_service

ORG = "Example University"
ALL_PASS = dict.fromkeys(
    (
        "purpose",
        "scientific_validity",
        "publication_fairness",
        "benefit_management",
        "provision_lawful",
    ),
    True,
)
APPLICATION: dict[str, Any] = {
    "title": "Diabetes and renal outcomes",
    "organization": ORG,
    "user_category": "government",
    "purpose": "Evaluate renal outcomes of type 2 diabetes care.",
    "scientific_rationale": "Cohort study with eGFR decline as outcome.",
    "publication_plan": "Public report with aggregate tables.",
    "funding_and_coi": "Ministry funding; none.",
    "data_items": ["ehr", "claims"],
    "dataset": {
        "kind": "pseudonymized",
        "resources": ["Patient", "Condition", "Observation", "MedicationRequest"],
        "cohort": {"condition_codes": ["E11*"]},
        "k": 10,
    },
}
MEMBERS = [
    ("n1", "natural_science"),
    ("h1", "humanities_social_science"),
    ("p1", "general_public"),
    ("p2", "general_public"),
]


async def _prepare(svc: RunningService, applications: int) -> list[str]:
    admin = svc.auth("operator:ops", ["admin"])
    for member_id, expertise in MEMBERS:
        body = {"member_id": member_id, "name": member_id, "expertise": expertise}
        r = await svc.client.post("/v1/committee/members", json=body, headers=admin)
        assert r.status_code == 201, r.text
    cert = {"organization": ORG, "certified_on": "2025-01-01", "expires_on": "2030-12-31"}
    assert (
        await svc.client.post("/v1/certified-users", json=cert, headers=admin)
    ).status_code == 201
    researcher = svc.auth("researcher:r1", ["review:apply"], {"organization": ORG})
    ids = []
    for _ in range(applications):
        r = await svc.client.post("/v1/applications", json=APPLICATION, headers=researcher)
        assert r.status_code == 201, r.text
        ids.append(r.json()["application_id"])
    return ids


async def _review(svc: RunningService, application_id: str, member_id: str, vote: str) -> int:
    r = await svc.client.post(
        f"/v1/applications/{application_id}/reviews",
        json={"criteria": ALL_PASS, "vote": vote, "comment": "synthetic"},
        headers=svc.auth(f"committee:{member_id}", ["review:decide"]),
    )
    return r.status_code


async def _consume(bootstrap: str, wanted: set[str]) -> dict[str, Event[ApplicationDecidedV1]]:
    transport = KafkaTransport(bootstrap)
    consumer = await transport.consumer(
        f"test-review-{secrets.token_hex(4)}", [APPLICATION_DECIDED]
    )
    found: dict[str, Event[ApplicationDecidedV1]] = {}
    deadline = time.monotonic() + 60
    try:
        while not wanted <= set(found) and time.monotonic() < deadline:
            for received in await consumer.getmany(timeout_ms=500, max_records=100):
                event = decode(received.message, ApplicationDecidedV1)
                if event.data.application_id in wanted:
                    found[event.data.application_id] = event
    finally:
        await consumer.stop()
    return found


async def test_decisions_reach_a_real_kafka_consumer_from_postgres(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    url = postgres_cluster.create_database(f"review_{secrets.token_hex(3)}")
    settings = embedded_settings(
        ReviewSettings, tmp_path, database_url=url, bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    async with running_service(create_app, settings) as svc:
        svc.context.clock = lambda: datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
        approved, rejected = await _prepare(svc, 2)
        chair = svc.auth("committee:n1", ["review:decide", "review:chair"])
        for application_id, vote in ((approved, "approve"), (rejected, "reject")):
            for member_id in ("n1", "h1", "p1"):
                assert await _review(svc, application_id, member_id, vote) == 201
            r = await svc.client.post(f"/v1/applications/{application_id}/decision", headers=chair)
            assert r.status_code == 200, r.text

        events = await _consume(kafka_bootstrap, {approved, rejected})
    assert set(events) == {approved, rejected}
    event = events[approved]
    assert event.type == APPLICATION_DECIDED
    assert event.key == approved
    assert event.data.decision == "approved"
    assert event.data.applicant == "researcher:r1"
    assert event.data.user_category == "government"
    assert event.data.dataset.kind == "pseudonymized"
    assert event.data.dataset.resources == [
        "Patient",
        "Condition",
        "Observation",
        "MedicationRequest",
    ]
    assert event.data.dataset.cohort.condition_codes == ["E11*"]
    assert event.data.dataset.k == 10
    assert events[rejected].data.decision == "rejected"


async def test_concurrent_approvals_get_distinct_numbers_and_one_review_per_member(
    tmp_path: Path, postgres_cluster: Any, kafka_bootstrap: str
) -> None:
    url = postgres_cluster.create_database(f"review_{secrets.token_hex(3)}")
    settings = embedded_settings(
        ReviewSettings, tmp_path, database_url=url, bus="kafka", kafka_bootstrap=kafka_bootstrap
    )
    async with running_service(create_app, settings) as svc:
        svc.context.clock = lambda: datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
        ids = await _prepare(svc, 6)
        # the same member files twice at once: one review counts, the other is 409
        codes = await asyncio.gather(*(_review(svc, ids[0], "p2", "approve") for _ in range(4)))
        assert sorted(codes) == [201, 409, 409, 409]
        for application_id in ids:
            for member_id in ("n1", "h1", "p1"):
                assert await _review(svc, application_id, member_id, "approve") == 201
        chair = svc.auth("committee:n1", ["review:decide", "review:chair"])
        results = await asyncio.gather(
            *(svc.client.post(f"/v1/applications/{i}/decision", headers=chair) for i in ids)
        )
        assert [r.status_code for r in results] == [200] * len(ids), [r.text for r in results]
        numbers = sorted(r.json()["approval"]["no"] for r in results)
        assert numbers == [f"2026-{n:04d}" for n in range(1, len(ids) + 1)]
        register = await svc.client.get("/v1/public/approvals")
        assert register.headers["x-total-count"] == str(len(ids))
