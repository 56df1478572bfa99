"""Shared fixtures and synthetic FHIR builders for the intake tests (all data made up)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_common.events import (
    OPTOUT_REQUESTED,
    RECORD_RECEIVED,
    Event,
    OptoutRequestedV1,
    RecordReceivedV1,
    decode,
    encode,
)
from kiban_intake.main import create_app
from kiban_intake.settings import IntakeSettings
from kiban_testing import RunningService, embedded_settings, running_service

sys.path.insert(0, str(Path(__file__).parent))  # the builders module beside this file

from intake_builders import CODE

DAY0 = date(2025, 4, 1)


class FakeClock:
    """The service's clock, moved by the test (noon in Japan)."""

    def __init__(self, day: date = DAY0) -> None:
        self.day = day

    def __call__(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, 3, 0, tzinfo=UTC)

    def advance(self, days: int) -> None:
        self.day += timedelta(days=days)


@dataclass
class Harness:
    svc: RunningService
    broker: MemoryBroker
    clock: FakeClock

    @property
    def admin(self) -> dict[str, str]:
        return self.svc.auth("operator:ops", ["admin"])

    def institution(self, code: str = CODE) -> dict[str, str]:
        return self.svc.auth(f"institution:{code}", ["intake:submit"])

    async def register(self, code: str = CODE) -> None:
        r = await self.svc.client.post(
            "/v1/institutions",
            json={"code": code, "name": "Synthetic Hospital", "kind": "hospital"},
            headers=self.admin,
        )
        assert r.status_code == 201, r.text

    async def notice(
        self, patient_id: str, notified_on: date, guardian: bool = False, code: str = CODE
    ) -> None:
        r = await self.svc.client.post(
            "/v1/notices",
            json={
                "notices": [
                    {
                        "patient_id": patient_id,
                        "notified_on": notified_on.isoformat(),
                        "method": "written",
                        "guardian_notified": guardian,
                    }
                ]
            },
            headers=self.institution(code),
        )
        assert r.status_code == 200, r.text

    async def post_bundle(self, bundle: Any, code: str = CODE, **headers: str) -> Any:
        return await self.svc.client.post(
            "/v1/bundles",
            content=json.dumps(bundle, ensure_ascii=False).encode(),
            headers={**self.institution(code), "Content-Type": "application/fhir+json", **headers},
        )

    def received(self) -> list[Event[RecordReceivedV1]]:
        return [decode(m, RecordReceivedV1) for m in self.broker.logs.get(RECORD_RECEIVED, [])]

    def open_event(self, event: Event[RecordReceivedV1]) -> tuple[dict[str, Any], list[Any]]:
        cipher = self.svc.runtime.crypto.cipher
        identity = cipher.decrypt_json(
            event.data.identity, context="kiban.intake.record-received.v1/identity"
        )
        resources = cipher.decrypt_json(
            event.data.resources, context="kiban.intake.record-received.v1/resources"
        )["resources"]
        return identity, resources

    async def request_optout(self, subject: dict[str, Any], **fields: Any) -> str:
        optout_id = fields.pop("optout_id", f"oo-{uuid.uuid4().hex[:12]}")
        full = {
            k: None
            for k in (
                "family_name",
                "given_name",
                "family_name_kana",
                "given_name_kana",
                "birth_date",
                "sex",
                "postal_code",
                "institution_patient_id",
                "deceased_on",
            )
        }
        full.update(subject)
        sealed = self.svc.runtime.crypto.seal(
            json.dumps(full, ensure_ascii=False).encode(),
            context="kiban.optout.optout-requested.v1/subject",
        )
        data = OptoutRequestedV1(
            optout_id=optout_id,
            action=fields.get("action", "stop"),
            scope=fields.get("scope", "all"),
            institution_code=fields.get("institution_code"),
            requester="self",
            requested_at=datetime.now(UTC),
            subject=sealed,
        )
        event = Event(type=OPTOUT_REQUESTED, source="/kiban/optout", key=optout_id, data=data)
        await self.broker.append([encode(event)])
        return optout_id


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    settings = embedded_settings(IntakeSettings, tmp_path, scheduler_interval_seconds=0.05)
    broker = MemoryBroker()
    clock = FakeClock()
    async with running_service(create_app, settings, broker=broker) as svc:
        svc.context.clock = clock
        h = Harness(svc, broker, clock)
        await h.register()
        yield h
