"""Helpers for the anonymizer tests: synthetic linked records (fixed seeds), a publisher
that plays linkage and release on the same broker, and a reader of what the service publishes."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from kiban_anonymizer.settings import AnonymizerSettings
from kiban_common.bus import Bus, Transport
from kiban_common.events import (
    DATASET_REQUESTED,
    PERSON_PURGED,
    RECORD_LINKED,
    REGISTRY,
    Cohort,
    DatasetRequestedV1,
    DatasetSpec,
    Demographics,
    Event,
    Period,
    PersonPurgedV1,
    RecordLinkedV1,
    Zone,
    decode,
    encode,
)
from kiban_testing import embedded_settings, eventually
from kiban_testing.services import RunningService

ADMIN = ("operator:ops", ["admin"])
FREE_TEXT = "FREE-TEXT-MUST-NOT-LEAK"
POSTALS = ["100-0001", "150-0002", "530-0001", "060-0001", "980-0011", "812-0011"]


def pseudonym(n: int) -> str:
    return f"psn{n:06d}{'a' * 20}"


def resources(
    person: str, rng: random.Random, *, codes: Sequence[str] = ("I50.0",)
) -> list[dict[str, Any]]:
    """Clinical resources as linkage forwards them (convention 4), with free text that the
    store must drop."""
    ref = {"reference": f"Patient/{person}"}
    year = rng.choice([2021, 2022, 2023])
    out: list[dict[str, Any]] = []
    for i, code in enumerate(codes):
        out.append(
            {
                "resourceType": "Condition",
                "id": f"c-{person}-{i}",
                "subject": ref,
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}],
                    "text": FREE_TEXT,
                },
                "onsetDateTime": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                "note": [{"text": FREE_TEXT}],
            }
        )
    out += [
        {
            "resourceType": "Observation",
            "id": f"o-{person}",
            "subject": ref,
            "code": {"coding": [{"system": "http://loinc.org", "code": "33762-6"}]},
            "valueQuantity": {"value": round(rng.uniform(50, 3000), 1), "unit": "pg/mL"},
            "effectiveDateTime": f"{year}-06-01",
        },
        {
            "resourceType": "Observation",
            "id": f"o2-{person}",
            "subject": ref,
            "code": {
                "coding": [{"system": "urn:oid:1.2.392.200119.4.504", "code": "3D010000001926101"}]
            },
            "valueString": FREE_TEXT,
            "effectiveDateTime": f"{year}-06-01",
        },
        {
            "resourceType": "MedicationRequest",
            "id": f"m-{person}",
            "subject": ref,
            "medicationCodeableConcept": {
                "coding": [{"system": "urn:oid:1.2.392.100495.20.2.74", "code": "2139005F1020"}]
            },
            "authoredOn": f"{year}-06-02",
            "note": [{"text": FREE_TEXT}],
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": f"a-{person}",
            "subject": ref,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
            "criticality": "low",
            "recordedDate": f"{year}-01-05",
        },
        {
            "resourceType": "Procedure",
            "id": f"p-{person}",
            "subject": ref,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "40701008"}]},
            "performedDateTime": f"{year}-06-03",
        },
        {
            "resourceType": "Encounter",
            "id": f"e-{person}",
            "subject": ref,
            "class": {"code": "IMP"},
            "period": {"start": f"{year}-06-01", "end": f"{year}-06-10"},
        },
    ]
    return out


def record(
    n: int,
    rng: random.Random,
    *,
    codes: Sequence[str] = ("I50.0",),
    merged_from: Sequence[str] = (),
    person: str | None = None,
) -> RecordLinkedV1:
    who = person or pseudonym(n)
    return RecordLinkedV1(
        person=who,
        institution_code="1312345678",
        submission_id=f"sub-{n}",
        linked_at=datetime(2024, 1, 1, tzinfo=UTC),
        demographics=Demographics(
            birth_date=date(rng.randint(1935, 1985), rng.randint(1, 12), rng.randint(1, 28)),
            sex=rng.choice(["male", "female"]),
            postal_code=rng.choice(POSTALS),
        ),
        resources=resources(who, rng, codes=codes),
        merged_from=list(merged_from),
    )


def dataset_request(
    release_id: str,
    application_id: str = "app-1",
    *,
    kind: str = "anonymized",
    k: int = 5,
    l: int | None = None,  # noqa: E741
    sensitive: str | None = None,
    codes: Sequence[str] = ("I50*",),
    resources: Sequence[str] = ("Patient", "Condition", "Observation", "MedicationRequest"),
) -> DatasetRequestedV1:
    return DatasetRequestedV1(
        release_id=release_id,
        application_id=application_id,
        requested_at=datetime(2024, 6, 1, tzinfo=UTC),
        dataset=DatasetSpec(
            kind=kind,  # type: ignore[arg-type]
            resources=list(resources),
            cohort=Cohort(
                condition_codes=list(codes),
                period=Period(start=date(2020, 1, 1), end=date(2024, 5, 31)),
            ),
            k=k,
            l=l,
            sensitive=sensitive,
        ),
    )


class Peer:
    """Publishes as linkage / release would, and reads the anonymizer's topics (own group)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.bus = Bus(transport, service="peer", zone=Zone.CORE, registry=REGISTRY)
        self.group = f"peer-{secrets.token_hex(4)}"

    async def publish(self, event_type: str, key: str, data: Any) -> None:
        event = Event(type=event_type, source="/kiban/test", key=key, data=data)
        await self.bus.publish([encode(event)])

    async def linked(self, data: RecordLinkedV1) -> None:
        await self.publish(RECORD_LINKED, data.person, data)

    async def purged(self, person: str, optout_id: str) -> None:
        await self.publish(
            PERSON_PURGED, person, PersonPurgedV1(person=person, optout_id=optout_id, action="stop")
        )

    async def request(self, data: DatasetRequestedV1) -> None:
        await self.publish(DATASET_REQUESTED, data.release_id, data)

    async def read(
        self,
        topic: str,
        *,
        count: int,
        where: Callable[[Any], bool] = lambda _: True,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> list[Any]:
        """The first `count` events of `topic` (data models) that satisfy `where`, read from
        the start of the topic with a group of this peer's own."""
        consumer = await self.transport.consumer(f"{self.group}-{topic}", [topic])
        model = REGISTRY.get(topic).data_model
        out: list[Any] = []
        try:

            async def poll() -> int:
                for received in await consumer.getmany(timeout_ms=200, max_records=100):
                    data = decode(received.message, model).data
                    if where(data):
                        out.append(data)
                return len(out)

            await eventually(poll, until=lambda n: n >= count, timeout=timeout)
        finally:
            await consumer.stop()
        return out


def settings_for(tmp_path: Path, **overrides: Any) -> AnonymizerSettings:
    overrides.setdefault("build", {"poll_interval_ms": 20})
    settings = embedded_settings(AnonymizerSettings, tmp_path, **overrides)
    assert isinstance(settings, AnonymizerSettings)
    return settings


async def build_of(
    svc: RunningService,
    release_id: str,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 — passed on to `eventually`
) -> dict[str, Any]:
    """The build of a release once it finished (ready or failed)."""
    headers = svc.auth(*ADMIN)

    async def probe() -> list[dict[str, Any]]:
        answer = await svc.client.get(
            "/v1/builds", params={"release_id": release_id}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        result: list[dict[str, Any]] = answer.json()
        return result

    found = await eventually(
        probe, until=lambda b: bool(b) and b[0]["status"] in ("ready", "failed"), timeout=timeout
    )
    return found[0]


async def stats(svc: RunningService) -> dict[str, Any]:
    answer = await svc.client.get("/v1/stats", headers=svc.auth(*ADMIN))
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result
