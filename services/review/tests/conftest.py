"""The review service on the embedded default (SQLite, in-process bus), with helpers that speak
its API as an operator, researchers, committee members and the chair. All data synthetic."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_common.events import APPLICATION_DECIDED, ApplicationDecidedV1, Event, decode
from kiban_review.main import create_app
from kiban_review.settings import ReviewSettings
from kiban_testing import RunningService, embedded_settings, running_service

ORG = "Example University"
OTHER_ORG = "Sample Pharma KK"

APPLICATION: dict[str, Any] = {
    "title": "Heart failure readmission after discharge",
    "organization": ORG,
    "user_category": "academia",
    "purpose": "Study readmission of heart failure patients to improve discharge care.",
    "scientific_rationale": "Retrospective cohort; readmission within 30 days as outcome.",
    "publication_plan": "Peer-reviewed journal; aggregate results only.",
    "funding_and_coi": "Public research grant; no conflicts declared.",
    "data_items": ["ehr", "dpc"],
    "dataset": {
        "kind": "anonymized",
        "resources": ["Patient", "Condition", "Encounter"],
        "cohort": {
            "condition_codes": ["I50*"],
            "period": {"start": "2024-01-01", "end": "2024-12-31"},
        },
        "k": 5,
    },
}

ALL_PASS = {
    "purpose": True,
    "scientific_validity": True,
    "publication_fairness": True,
    "benefit_management": True,
    "provision_lawful": True,
}

# Two members per expertise group; m-pub-2 also works for ORG (a conflict of interest there).
MEMBERS = [
    ("m-nat-1", "natural_science", ["Tokyo Institute of Science"]),
    ("m-nat-2", "natural_science", ["Kansai Medical Center"]),
    ("m-hum-1", "humanities_social_science", ["Law Faculty, Northern University"]),
    ("m-hum-2", "humanities_social_science", []),
    ("m-pub-1", "general_public", ["Patients' Association"]),
    ("m-pub-2", "general_public", ["ｅｘａｍｐｌｅ  university"]),  # NFKC/case/space variant
]


class Clock:
    """A settable clock for the service's context."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def application(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(APPLICATION)
    dataset = changes.pop("dataset", None)
    body.update(changes)
    if dataset:
        body["dataset"].update(dataset)
    return body


@dataclass
class Review:
    """The service under test and the people who use it. Tests reach the shared data through
    it (`review.ORG`, `review.application(...)`): test modules cannot import the conftest."""

    svc: RunningService
    clock: Clock
    broker: MemoryBroker
    ORG = ORG
    OTHER_ORG = OTHER_ORG
    ALL_PASS = ALL_PASS

    @staticmethod
    def application(**changes: Any) -> dict[str, Any]:
        return application(**changes)

    async def decided_events(
        self, group: str = "test-release"
    ) -> list[Event[ApplicationDecidedV1]]:
        return await decided_events(self.broker, group)

    @property
    def client(self) -> httpx.AsyncClient:
        return self.svc.client

    def admin(self) -> dict[str, str]:
        return self.svc.auth("operator:ops1", ["admin"])

    def researcher(self, rid: str = "r1", organization: str = ORG) -> dict[str, str]:
        return self.svc.auth(f"researcher:{rid}", ["review:apply"], {"organization": organization})

    def member(self, member_id: str) -> dict[str, str]:
        return self.svc.auth(f"committee:{member_id}", ["review:decide"])

    def chair(self) -> dict[str, str]:
        return self.svc.auth("committee:m-nat-1", ["review:decide", "review:chair"])

    async def seed_committee(self) -> None:
        for member_id, expertise, affiliations in MEMBERS:
            r = await self.client.post(
                "/v1/committee/members",
                json={
                    "member_id": member_id,
                    "name": f"Member {member_id}",
                    "expertise": expertise,
                    "affiliations": affiliations,
                },
                headers=self.admin(),
            )
            assert r.status_code == 201, r.text

    async def certify(self, organization: str, certified_on: str, expires_on: str) -> None:
        r = await self.client.post(
            "/v1/certified-users",
            json={
                "organization": organization,
                "certified_on": certified_on,
                "expires_on": expires_on,
            },
            headers=self.admin(),
        )
        assert r.status_code == 201, r.text

    async def apply(
        self, body: dict[str, Any] | None = None, *, rid: str = "r1", organization: str = ORG
    ) -> str:
        r = await self.client.post(
            "/v1/applications",
            json=body or application(),
            headers=self.researcher(rid, organization),
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "submitted"
        return str(r.json()["application_id"])

    async def review(
        self,
        application_id: str,
        member_id: str,
        vote: str = "approve",
        criteria: dict[str, bool] | None = None,
    ) -> httpx.Response:
        return await self.client.post(
            f"/v1/applications/{application_id}/reviews",
            json={"criteria": criteria or ALL_PASS, "vote": vote, "comment": "synthetic"},
            headers=self.member(member_id),
        )

    async def reviews(
        self, application_id: str, members: Sequence[str], vote: str = "approve"
    ) -> None:
        for member_id in members:
            r = await self.review(application_id, member_id, vote)
            assert r.status_code == 201, r.text

    async def decide(self, application_id: str, decision: str | None = None) -> httpx.Response:
        return await self.client.post(
            f"/v1/applications/{application_id}/decision",
            json={"decision": decision} if decision else None,
            headers=self.chair(),
        )

    async def approve(self, body: dict[str, Any] | None = None) -> str:
        application_id = await self.apply(body)
        await self.reviews(application_id, ["m-nat-1", "m-hum-1", "m-pub-1"])
        r = await self.decide(application_id, "approved")
        assert r.status_code == 200, r.text
        return application_id

    async def status(self, application_id: str) -> str:
        r = await self.client.get(f"/v1/applications/{application_id}", headers=self.admin())
        assert r.status_code == 200, r.text
        return str(r.json()["status"])


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
async def review(tmp_path: Path, broker: MemoryBroker) -> AsyncIterator[Review]:
    settings = embedded_settings(ReviewSettings, tmp_path)
    clock = Clock(datetime(2026, 4, 1, 1, 0, tzinfo=UTC))  # 10:00 in Tokyo
    async with running_service(create_app, settings, broker=broker) as svc:
        svc.context.clock = clock
        harness = Review(svc, clock, broker)
        await harness.seed_committee()
        yield harness


async def decided_events(
    broker: MemoryBroker, group: str = "test-release"
) -> list[Event[ApplicationDecidedV1]]:
    """What a consumer of `application-decided` on the in-process bus receives."""
    consumer = await MemoryTransport(broker).consumer(group, [APPLICATION_DECIDED])
    try:
        received = await consumer.getmany(timeout_ms=200, max_records=100)
    finally:
        await consumer.stop()
    return [decode(r.message, ApplicationDecidedV1) for r in received]
