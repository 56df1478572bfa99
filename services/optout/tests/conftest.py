"""Fixtures of the optout tests: the service on the embedded default, a fixed clock, synthetic
people (fixed, invented names), and a stand-in for the core services' acknowledgements."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_common.crypto import unseal
from kiban_common.events import (
    OPTOUT_REQUESTED,
    Event,
    OptoutAppliedV1,
    OptoutRequestedV1,
    decode,
    encode,
)
from kiban_optout.api._taking import SEAL_CONTEXT
from kiban_optout.main import create_app
from kiban_optout.settings import OptoutSettings, RateLimitSettings
from kiban_testing import RunningService, embedded_settings, eventually, running_service

# 2026-06-01 09:00 in Tokyo.
NOW = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)

PATIENT_CLAIMS: dict[str, Any] = {
    "family_name": "架空",
    "given_name": "太郎",
    "family_name_kana": "カクウ",
    "given_name_kana": "タロウ",
    "birthdate": "1980-01-02",
    "gender": "male",
}
PATIENT_SUBJECT: dict[str, Any] = {
    "family_name": "架空",
    "given_name": "太郎",
    "family_name_kana": "カクウ",
    "given_name_kana": "タロウ",
    "birth_date": "1980-01-02",
    "sex": "male",
}
CHILD_SUBJECT: dict[str, Any] = {
    "family_name": "架空",
    "given_name": "花子",
    "family_name_kana": "カクウ",
    "given_name_kana": "ハナコ",
    "birth_date": "2015-04-01",
    "sex": "female",
}
DECEASED_SUBJECT: dict[str, Any] = {
    "family_name": "仮名",
    "given_name": "一郎",
    "family_name_kana": "カメイ",
    "given_name_kana": "イチロウ",
    "birth_date": "1940-03-03",
    "sex": "male",
    "deceased_on": "2025-12-24",
}
OTHER_CLAIMS: dict[str, Any] = {
    "family_name": "試験",
    "given_name": "次郎",
    "family_name_kana": "シケン",
    "given_name_kana": "ジロウ",
    "birthdate": "1975-07-07",
    "gender": "male",
}
WINDOW = "institution:1312345678"


class Optout:
    """The running service plus helpers to act as patients, counters and core services."""

    def __init__(self, svc: RunningService, broker: MemoryBroker) -> None:
        self.svc = svc
        self.broker = broker
        self.client = svc.client

    def patient(
        self, sub: str = "patient:p1", claims: dict[str, Any] | None = None
    ) -> dict[str, str]:
        return self.svc.auth(sub, ["optout:self"], PATIENT_CLAIMS if claims is None else claims)

    def window(self, sub: str = WINDOW) -> dict[str, str]:
        return self.svc.auth(sub, ["optout:window", "intake:submit"])

    async def post(self, body: dict[str, Any], headers: dict[str, str]) -> Any:
        return await self.client.post("/v1/optouts", json=body, headers=headers)

    def requested(self) -> list[Event[Any]]:
        """The `optout-requested` events published so far."""
        return [decode(m, OptoutRequestedV1) for m in self.broker.logs.get(OPTOUT_REQUESTED, [])]

    async def published(self, count: int = 1) -> list[Event[Any]]:
        """Wait until `count` `optout-requested` events are out (the relay runs after commit)."""

        async def probe() -> list[Event[Any]]:
            return self.requested()

        events = await eventually(probe, until=lambda e: len(e) >= count, timeout=10)
        assert len(events) == count, f"{len(events)} events published, not {count}"
        return events

    def unseal(self, event: Event[Any]) -> dict[str, Any]:
        """Open the subject the way a core service does (with the core's private key)."""
        pem = (self.svc.state / "dev-sealing.pem").read_bytes()
        opened: dict[str, Any] = json.loads(
            unseal(event.data.subject, private_key_pem=pem, context=SEAL_CONTEXT)
        )
        return opened

    async def ack(
        self,
        service: str,
        wire_id: str,
        *,
        matched: int = 1,
        purged: dict[str, int] | None = None,
        event_id: str | None = None,
    ) -> Event[Any]:
        """Publish `kiban.<service>.optout-applied.v1` as that core service would."""
        event = ack_event(service, wire_id, matched=matched, purged=purged, event_id=event_id)
        await self.broker.append([encode(event)])
        return event


def ack_event(
    service: str,
    wire_id: str,
    *,
    matched: int = 1,
    purged: dict[str, int] | None = None,
    event_id: str | None = None,
    at: datetime = NOW,
) -> Event[Any]:
    data = OptoutAppliedV1(
        optout_id=wire_id,
        service=service,  # type: ignore[arg-type]
        applied_at=at,
        matched=matched,
        purged=purged if purged is not None else {"records": 2},
    )
    extra = {"id": event_id} if event_id else {}
    return Event(
        type=f"kiban.{service}.optout-applied.v1",
        source=f"/kiban/{service}",
        key=wire_id,
        data=data,
        **extra,
    )


SettingsHook = Callable[..., OptoutSettings]


@pytest.fixture
def settings_for(tmp_path: Path) -> SettingsHook:
    def make(**overrides: Any) -> OptoutSettings:
        settings = embedded_settings(OptoutSettings, tmp_path, **overrides)
        assert isinstance(settings, OptoutSettings)
        return settings

    return make


@pytest.fixture
async def optout(settings_for: SettingsHook) -> AsyncIterator[Optout]:
    broker = MemoryBroker()
    # Tests poll the status; the rate limit has a test of its own.
    generous = RateLimitSettings(burst=100_000, per_second=1000.0, window_burst=100_000)
    async with running_service(create_app, settings_for(rate_limit=generous), broker=broker) as svc:
        svc.context.clock = lambda: NOW
        yield Optout(svc, broker)
