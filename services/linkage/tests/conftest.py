"""A linkage service under test, fed through its own outbox (the same path intake and optout use:
outbox → bus → the service's consumer), with synthetic identities only."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_common.events import (
    OPTOUT_REQUESTED,
    RECORD_RECEIVED,
    REGISTRY,
    Event,
    OptoutRequestedV1,
    RecordReceivedV1,
    decode,
)
from kiban_linkage.context import (
    OPTOUT_SUBJECT,
    RECORD_RECEIVED_IDENTITY,
    RECORD_RECEIVED_RESOURCES,
    Linkage,
)
from kiban_linkage.main import create_app
from kiban_linkage.settings import LinkageSettings
from kiban_testing import RunningService, embedded_settings, eventually, running_service

INSTITUTION = "1312345678"
OPERATOR = ("operator:ops-1", ["admin"])


def taro(**changes: Any) -> dict[str, Any]:
    """A synthetic identity as intake forwards it (convention 1)."""
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


Names = Sequence[tuple[str, str]]  # (kanji, katakana)


def synthetic_people(
    n: int, *, seed: int, family: Names, given: Names, addresses: bool = True
) -> list[dict[str, Any]]:
    """`n` synthetic identities (as intake forwards them) drawn from the given names with a
    fixed seed; many share a name, none shares the rest by more than chance."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        family_name, given_name = rng.choice(family), rng.choice(given)
        birth = f"19{rng.randint(40, 99)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        sex = rng.choice(["male", "female"])
        postal = f"{rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
        address = f"東京都{rng.randint(1, 99)}区{rng.randint(1, 9)}-{i}" if addresses else None
        out.append(
            {
                "institution_patient_id": f"E-{i}",
                "family_name": family_name[0],
                "given_name": given_name[0],
                "family_name_kana": family_name[1],
                "given_name_kana": given_name[1],
                "birth_date": birth,
                "sex": sex,
                "postal_code": postal,
                "address": address,
                "insurance_numbers": [f"{rng.randint(10**7, 10**8 - 1)}"],
                "deceased_on": None,
            }
        )
    return out


@dataclass
class Linked:
    svc: RunningService
    broker: MemoryBroker | None
    sent: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def ctx(self) -> Linkage:
        ctx: Linkage = self.svc.context
        return ctx

    @property
    def admin(self) -> dict[str, str]:
        return self.svc.auth(*OPERATOR)

    async def receive(
        self,
        identity: dict[str, Any],
        resources: list[dict[str, Any]] | None = None,
        *,
        institution: str = INSTITUTION,
    ) -> None:
        """Publish a `record-received` for `identity` as intake does (convention 1)."""
        await self._emit(self.record(identity, resources, institution=institution))

    async def send_together(self, *events: Event[Any]) -> None:
        """Publish several events in one transaction, so they reach the consumer as a batch."""
        async with self.svc.runtime.transaction() as tx:
            for event in events:
                await tx.emit(event)
        self.sent += len(events)
        await self.settled()

    def record(
        self,
        identity: dict[str, Any],
        resources: list[dict[str, Any]] | None = None,
        *,
        institution: str = INSTITUTION,
    ) -> Event[Any]:
        """A `record-received` for `identity` as intake builds it (convention 1)."""
        cipher = self.ctx.cipher
        patient_id = str(identity["institution_patient_id"])
        data = RecordReceivedV1(
            submission_id=f"sub-{next(self._ids)}",
            institution_code=institution,
            received_at=datetime.now(UTC),
            resource_count=len(resources or []),
            identity=cipher.encrypt_json(identity, context=RECORD_RECEIVED_IDENTITY),
            resources=cipher.encrypt_json(
                {"resources": resources if resources is not None else [condition(patient_id)]},
                context=RECORD_RECEIVED_RESOURCES,
            ),
        )
        key = self.ctx.patient_key(institution, patient_id)
        return Event(type=RECORD_RECEIVED, source="/kiban/intake", key=key, data=data)

    async def optout(
        self,
        subject: dict[str, Any],
        *,
        optout_id: str,
        action: str = "stop",
        scope: str = "all",
        institution: str | None = None,
    ) -> None:
        """Publish an `optout-requested` with the subject sealed as optout does (convention 2)."""
        await self._emit(
            self.optout_event(
                subject, optout_id=optout_id, action=action, scope=scope, institution=institution
            )
        )

    def optout_event(
        self,
        subject: dict[str, Any],
        *,
        optout_id: str,
        action: str = "stop",
        scope: str = "all",
        institution: str | None = None,
    ) -> Event[Any]:
        sealed = self.svc.runtime.crypto.seal(
            json.dumps(subject, ensure_ascii=False).encode(), context=OPTOUT_SUBJECT
        )
        data = OptoutRequestedV1(
            optout_id=optout_id,
            action=action,  # type: ignore[arg-type]
            scope=scope,  # type: ignore[arg-type]
            institution_code=institution,
            requester="self",
            requested_at=datetime.now(UTC),
            subject=sealed,
        )
        return Event(type=OPTOUT_REQUESTED, source="/kiban/optout", key=optout_id, data=data)

    async def _emit(self, event: Event[Any]) -> None:
        async with self.svc.runtime.transaction() as tx:
            await tx.emit(event)
        self.sent += 1
        await self.settled()

    async def settled(self) -> None:
        """Wait until the effects of everything sent so far have committed (the runner records
        each event id in the transaction of its effect) and been published."""
        runner = self.svc.runtime.consumers[0]
        engine = self.svc.runtime.engine

        async def committed() -> int:
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql("SELECT count(*) FROM kiban_processed_events")
                return int(result.scalar_one()) + runner.stats.dead_lettered

        await eventually(committed, until=lambda n: n >= self.sent)

        async def unpublished() -> int:  # and what they emitted has left the outbox
            async with engine.connect() as conn:
                result = await conn.exec_driver_sql("SELECT count(*) FROM kiban_outbox")
                return int(result.scalar_one())

        await eventually(unpublished, until=lambda n: n == 0)

    def published(self, event_type: str) -> list[Event[Any]]:
        """Events this service published (in-process broker only)."""
        assert self.broker is not None
        model = REGISTRY.get(event_type).data_model
        return [decode(m, model) for m in self.broker.logs.get(event_type, [])]

    async def wait_published(self, event_type: str, count: int) -> list[Event[Any]]:
        async def probe() -> list[Event[Any]]:
            return self.published(event_type)

        return await eventually(probe, until=lambda events: len(events) >= count)

    async def stats(self) -> dict[str, Any]:
        response = await self.svc.client.get("/v1/stats", headers=self.admin)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def linked(tmp_path: Path) -> AsyncIterator[Linked]:
    broker = MemoryBroker()
    settings = embedded_settings(LinkageSettings, tmp_path)
    async with running_service(create_app, settings, broker=broker) as svc:
        yield Linked(svc, broker)


@pytest.fixture
def harness() -> type[Linked]:
    """The harness class, for tests that start the service themselves."""
    return Linked


@pytest.fixture
def people_of() -> Callable[..., list[dict[str, Any]]]:
    """`synthetic_people`, for test modules (they cannot import conftest)."""
    return synthetic_people
