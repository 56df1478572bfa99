"""Approval → build → ready → download on the in-process bus, with a fake anonymizer that
writes real files; and every rule around it: only the applicant, only while ready, download
limit, revoke, expiry, verification of the announced files, idempotent decisions."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select

from kiban_common.bus import MemoryBroker, MemoryTransport
from kiban_common.events import (
    DATASET_REQUESTED,
    RELEASE_PUBLISHED,
    DatasetBuiltV1,
    DatasetRequestedV1,
    ReleasePublishedV1,
    decode,
)
from kiban_release.domain.manifest import verify
from kiban_release.main import create_app
from kiban_release.settings import ReleaseSettings
from kiban_release.store.tables import release_downloads, releases
from kiban_testing import RunningService, embedded_settings, eventually, running_service

from .conftest import (
    ADMIN,
    DOWNLOAD,
    OPERATOR,
    OTHER_RESEARCHER,
    RESEARCHER,
    FakeAnonymizer,
    FakeClock,
    anonymizer_running,
    decided,
    publish,
)


@dataclass
class Stack:
    svc: RunningService
    broker: MemoryBroker
    transport: MemoryTransport
    fake: FakeAnonymizer
    clock: FakeClock

    def auth(self, sub: str = RESEARCHER, scopes: list[str] = DOWNLOAD) -> dict[str, str]:
        return self.svc.auth(sub, scopes)

    async def approve(self, application_id: str, **kw: Any) -> str:
        """Publish an approval and wait for the release to leave `building`; its id."""
        self.fake.applications.add(application_id)
        await publish(self.transport, decided(application_id, **kw))
        applicant = kw.get("applicant", RESEARCHER)
        page = await eventually(
            lambda: self._list(application_id, applicant),
            until=lambda items: bool(items) and items[0]["status"] != "building",
        )
        return str(page[0]["release_id"])

    async def _list(self, application_id: str, applicant: str | None) -> list[dict[str, Any]]:
        sub, scopes = (applicant, DOWNLOAD) if applicant else (OPERATOR, ADMIN)
        r = await self.svc.client.get(
            "/v1/releases",
            params={"application_id": application_id},
            headers=self.auth(sub, scopes),
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def published(self) -> list[ReleasePublishedV1]:
        return [decode(m, ReleasePublishedV1).data for m in self.broker.logs[RELEASE_PUBLISHED]]


async def _stack(tmp_path: Path, clock: FakeClock, **overrides: Any) -> AsyncIterator[Stack]:
    broker = MemoryBroker()
    settings = embedded_settings(
        ReleaseSettings,
        tmp_path,
        release={"sweep_interval_seconds": 0.05, "download_limit": 2, "expiry_days": 30},
        **overrides,
    )
    assert isinstance(settings, ReleaseSettings)
    transport = MemoryTransport(broker)
    fake = FakeAnonymizer(transport, settings.files_dir)
    app = functools.partial(create_app, clock=clock)
    async with running_service(app, settings, broker=broker) as svc, anonymizer_running(fake):
        yield Stack(svc, broker, transport, fake, clock)


@pytest.fixture
async def stack(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Stack]:
    async for s in _stack(tmp_path, clock):
        yield s


async def test_approval_builds_a_ready_release_the_applicant_downloads_and_the_download_is_logged(
    stack: Stack,
) -> None:
    release_id = await stack.approve("app-1")
    client = stack.svc.client

    r = await client.get(f"/v1/releases/{release_id}", headers=stack.auth())
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["kind"] == "anonymized"
    assert body["privacy"] == {
        "k": 5,
        "achieved_k": 7,
        "suppressed": 3,
        "l": None,
        "achieved_l": None,
    }
    assert body["expires_at"] is not None
    built = stack.fake.built[release_id]
    assert {f["name"]: f["sha256"] for f in body["files"]} == {
        name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in built.files.items()
    }
    assert all(f["downloads_remaining"] == 2 for f in body["files"])
    assert body["fee"]["total_yen"] > 0
    assert verify(body["manifest"])

    download = await client.get(
        f"/v1/releases/{release_id}/files/conditions.csv", headers=stack.auth()
    )
    assert download.status_code == 200
    assert download.content == built.files["conditions.csv"].read_bytes()
    assert download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"] == 'attachment; filename="conditions.csv"'

    async with stack.svc.runtime.engine.connect() as conn:
        rows = (await conn.execute(select(release_downloads))).mappings().all()
    assert len(rows) == 1
    log = rows[0]
    assert (log["release_id"], log["file_name"], log["principal"], log["source"]) == (
        release_id,
        "conditions.csv",
        RESEARCHER,
        "127.0.0.1",
    )
    assert log["bytes"] == len(download.content)
    assert log["completed"] is True
    assert log["sha256_ok"] is True
    assert log["started_at"] is not None
    assert log["finished_at"] is not None

    # the operator reads the same log over the API
    logged = await client.get(
        f"/v1/releases/{release_id}/downloads", headers=stack.auth(OPERATOR, ADMIN)
    )
    assert [(d["principal"], d["bytes"]) for d in logged.json()] == [
        (RESEARCHER, len(download.content))
    ]

    requested = [decode(m, DatasetRequestedV1).data for m in stack.broker.logs[DATASET_REQUESTED]]
    assert [(e.release_id, e.application_id, e.dataset.kind) for e in requested] == [
        (release_id, "app-1", "anonymized")
    ]
    ready = stack.published()
    assert [(e.release_id, e.status) for e in ready] == [(release_id, "ready")]
    assert {f.name for f in ready[0].files} == {"patients.csv", "conditions.csv"}
    assert ready[0].expires_at is not None


async def test_a_redelivered_or_repeated_decision_makes_one_release_and_one_build_request(
    stack: Stack,
) -> None:
    event = decided("app-dup")
    stack.fake.applications.add("app-dup")
    await publish(stack.transport, event)
    await publish(stack.transport, event)  # the same event again (redelivery)
    await eventually(
        lambda: stack._list("app-dup", RESEARCHER),
        until=lambda items: bool(items) and items[0]["status"] == "ready",
    )
    # a second consumer delivery that bypasses the inbox still finds the release by event id
    from kiban_release.consumers.decisions import apply_decision

    async with stack.svc.runtime.transaction() as tx:
        await apply_decision(stack.svc.context, event, tx)
    async with stack.svc.runtime.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(releases))).scalar_one()
    assert count == 1
    assert len(stack.broker.logs[DATASET_REQUESTED]) == 1


async def test_rejected_decisions_make_no_release(stack: Stack) -> None:
    await publish(stack.transport, decided("app-no", decision="rejected"))
    await publish(stack.transport, decided("app-yes"))
    stack.fake.applications.add("app-yes")
    await eventually(lambda: stack._list("app-yes", RESEARCHER), until=bool)
    assert await stack._list("app-no", None) == []


async def test_a_non_applicant_cannot_list_read_download_or_see_the_manifest(stack: Stack) -> None:
    release_id = await stack.approve("app-2")
    client = stack.svc.client
    other = stack.auth(OTHER_RESEARCHER)
    listed = await client.get("/v1/releases", params={"application_id": "app-2"}, headers=other)
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    assert (await client.get("/v1/releases", headers=other)).json()["items"] == []
    for path in ("", "/files/patients.csv", "/manifest", "/fee"):
        r = await client.get(f"/v1/releases/{release_id}{path}", headers=other)
        assert r.status_code == 404, path
        assert r.json()["code"] == "release_not_found"
    unknown = await client.get("/v1/releases/no-such-release", headers=other)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "release_not_found"
    # an operator may read it, never download it
    assert (
        await client.get(f"/v1/releases/{release_id}", headers=stack.auth(OPERATOR, ADMIN))
    ).status_code == 200
    r = await client.get(
        f"/v1/releases/{release_id}/files/patients.csv", headers=stack.auth(OPERATOR, ADMIN)
    )
    assert r.status_code == 403  # no release:download scope
    # without a token, or without a release scope
    assert (await client.get(f"/v1/releases/{release_id}")).status_code == 401
    r = await client.get(
        f"/v1/releases/{release_id}", headers=stack.auth(RESEARCHER, ["review:apply"])
    )
    assert r.status_code == 403
    async with stack.svc.runtime.engine.connect() as conn:
        logged = (
            await conn.execute(select(func.count()).select_from(release_downloads))
        ).scalar_one()
    assert logged == 0


async def test_download_limit_is_enforced_per_file(stack: Stack) -> None:
    release_id = await stack.approve("app-3")
    url = f"/v1/releases/{release_id}/files/patients.csv"
    for _ in range(2):
        assert (await stack.svc.client.get(url, headers=stack.auth())).status_code == 200
    refused = await stack.svc.client.get(url, headers=stack.auth())
    assert refused.status_code == 403
    assert refused.json()["code"] == "download_limit_reached"
    other_file = f"/v1/releases/{release_id}/files/conditions.csv"
    assert (await stack.svc.client.get(other_file, headers=stack.auth())).status_code == 200
    body = (await stack.svc.client.get(f"/v1/releases/{release_id}", headers=stack.auth())).json()
    assert {f["name"]: f["downloads_remaining"] for f in body["files"]} == {
        "patients.csv": 0,
        "conditions.csv": 1,
    }


async def test_unknown_file_is_404(stack: Stack) -> None:
    release_id = await stack.approve("app-4")
    r = await stack.svc.client.get(
        f"/v1/releases/{release_id}/files/..%2Fsecret.csv", headers=stack.auth()
    )
    assert r.status_code == 404


async def test_revoke_stops_downloads_and_announces_it(stack: Stack) -> None:
    release_id = await stack.approve("app-5")
    client = stack.svc.client
    assert (
        await client.post(f"/v1/releases/{release_id}/revoke", headers=stack.auth())
    ).status_code == 403
    r = await client.post(
        f"/v1/releases/{release_id}/revoke",
        json={"reason": "agreement breached"},
        headers=stack.auth(OPERATOR, ADMIN),
    )
    assert r.status_code == 200
    assert r.json()["status"] == "revoked"
    again = await client.post(
        f"/v1/releases/{release_id}/revoke", headers=stack.auth(OPERATOR, ADMIN)
    )
    assert again.status_code == 200
    assert again.json()["status"] == "revoked"
    gone = await client.get(f"/v1/releases/{release_id}/files/patients.csv", headers=stack.auth())
    assert gone.status_code == 410
    assert gone.json()["code"] == "release_revoked"
    await eventually(
        lambda: _async(stack.published()),
        until=lambda events: (
            [(e.release_id, e.status) for e in events]
            == [(release_id, "ready"), (release_id, "revoked")]
        ),
    )
    assert (
        await client.post("/v1/releases/nope/revoke", headers=stack.auth(OPERATOR, ADMIN))
    ).status_code == 404


async def test_expiry_stops_downloads_and_the_sweep_marks_and_announces_it(stack: Stack) -> None:
    release_id = await stack.approve("app-6")
    url = f"/v1/releases/{release_id}/files/patients.csv"
    stack.clock.advance(timedelta(days=29, hours=23))
    assert (await stack.svc.client.get(url, headers=stack.auth())).status_code == 200
    stack.clock.advance(timedelta(hours=2))
    # refused on the spot, even before the sweep has run
    r = await stack.svc.client.get(url, headers=stack.auth())
    assert r.status_code == 410
    assert r.json()["code"] == "release_expired"
    body = await eventually(
        lambda: _json(stack, f"/v1/releases/{release_id}"),
        until=lambda b: b["status"] == "expired",
    )
    assert body["ended_at"] is not None
    await eventually(
        lambda: _async(stack.published()),
        until=lambda events: (
            [(e.release_id, e.status) for e in events]
            == [(release_id, "ready"), (release_id, "expired")]
        ),
    )
    revoke = await stack.svc.client.post(
        f"/v1/releases/{release_id}/revoke", headers=stack.auth(OPERATOR, ADMIN)
    )
    assert revoke.status_code == 409


async def test_not_ready_release_cannot_be_downloaded(stack: Stack) -> None:
    # no fake build for this application: it stays building
    await publish(stack.transport, decided("app-7"))
    items = await eventually(lambda: stack._list("app-7", RESEARCHER), until=bool)
    assert items[0]["status"] == "building"
    assert items[0]["files"] == []
    r = await stack.svc.client.get(
        f"/v1/releases/{items[0]['release_id']}/files/patients.csv", headers=stack.auth()
    )
    assert r.status_code == 409
    assert r.json()["code"] == "not_ready"
    manifest = await stack.svc.client.get(
        f"/v1/releases/{items[0]['release_id']}/manifest", headers=stack.auth()
    )
    assert manifest.status_code == 404
    assert manifest.json()["code"] == "manifest_not_issued"


def _bad_sha(data: DatasetBuiltV1) -> DatasetBuiltV1:
    files = [
        f.model_copy(update={"sha256": "0" * 64}) if i == 0 else f for i, f in enumerate(data.files)
    ]
    return data.model_copy(update={"files": files})


def _outside(data: DatasetBuiltV1) -> DatasetBuiltV1:
    files = [f.model_copy(update={"uri": "file:///etc/passwd"}) for f in data.files]
    return data.model_copy(update={"files": files})


def _failed(data: DatasetBuiltV1) -> DatasetBuiltV1:
    return data.model_copy(
        update={"status": "failed", "files": [], "reason": "k=5 not achievable for the cohort"}
    )


@pytest.mark.parametrize(
    ("sabotage", "reason"),
    [
        (_bad_sha, "sha256 does not match"),
        (_outside, "outside the release files directory"),
        (_failed, "k=5 not achievable for the cohort"),
    ],
)
async def test_a_build_that_fails_or_does_not_verify_fails_the_release(
    stack: Stack, sabotage: Any, reason: str
) -> None:
    stack.fake.sabotage["app-8"] = sabotage
    release_id = await stack.approve("app-8")
    body = await _json(stack, f"/v1/releases/{release_id}")
    assert body["status"] == "failed"
    assert reason in body["reason"]
    assert body["files"] == []
    r = await stack.svc.client.get(
        f"/v1/releases/{release_id}/files/patients.csv", headers=stack.auth()
    )
    assert r.status_code == 409
    assert r.json()["code"] == "release_failed"
    assert stack.published() == []


async def test_a_decision_without_an_applicant_fails_without_building(stack: Stack) -> None:
    await publish(stack.transport, decided("app-9", applicant=None))
    items = await eventually(lambda: stack._list("app-9", None), until=bool)
    assert items[0]["status"] == "failed"
    assert stack.broker.logs[DATASET_REQUESTED] == []


async def test_fee_statement_follows_the_configured_tariff(
    tmp_path: Path, clock: FakeClock
) -> None:
    tariff = {
        "base_fee_yen": 100_000,
        "data_fee_per_row_yen": "0.5",
        "environment_fee_yen": 30_000,
        "tax_percent": "10",
    }
    async for stack in _stack(tmp_path, clock, tariff=tariff):
        release_id = await stack.approve("app-fee")
        fee = await _json(stack, f"/v1/releases/{release_id}/fee")
        rows = sum(
            len(p.read_text().splitlines()) - 1 for p in stack.fake.built[release_id].files.values()
        )
        data_fee = -(-rows // 2)  # 0.5 yen a row, rounded up
        assert [(line["item"], line["amount_yen"]) for line in fee["lines"]] == [
            ("base", 100_000),
            ("data", data_fee),
            ("environment", 30_000),
        ]
        subtotal = 130_000 + data_fee
        assert fee["subtotal_yen"] == subtotal
        assert fee["tax_yen"] == subtotal // 10
        assert fee["total_yen"] == subtotal + subtotal // 10
        assert fee["currency"] == "JPY"


async def test_manifest_is_signed_verifiable_with_the_published_key_and_fails_when_tampered(
    stack: Stack,
) -> None:
    release_id = await stack.approve("app-10")
    envelope = await _json(stack, f"/v1/releases/{release_id}/manifest")
    key = (await stack.svc.client.get("/v1/manifest-key")).json()
    assert key["key_id"] == envelope["key_id"]
    manifest = envelope["manifest"]
    assert manifest["release_id"] == release_id
    assert manifest["application_id"] == "app-10"
    assert manifest["recipient"] == RESEARCHER
    assert manifest["build_id"] == "b-" + release_id[:8]
    assert manifest["issued_at"]
    assert {f["name"] for f in manifest["files"]} == {"patients.csv", "conditions.csv"}
    assert verify(envelope, key["public_key"].encode())

    tampered = {**envelope, "manifest": {**manifest, "recipient": OTHER_RESEARCHER}}
    assert not verify(tampered, key["public_key"].encode())
    files = [{**f, "sha256": "f" * 64} for f in manifest["files"]]
    assert not verify({**envelope, "manifest": {**manifest, "files": files}})


async def test_signing_key_is_generated_once_under_the_state_dir(
    tmp_path: Path, clock: FakeClock
) -> None:
    keys = []
    for _ in range(2):
        async for stack in _stack(tmp_path, clock):
            keys.append((await stack.svc.client.get("/v1/manifest-key")).json()["key_id"])
    assert keys[0] == keys[1]
    key_file = tmp_path / "release-signing-key.pem"
    assert key_file.exists()
    assert key_file.stat().st_mode & 0o077 == 0


async def test_listing_is_paginated(stack: Stack) -> None:
    ids = {await stack.approve(f"app-p{n}") for n in range(3)}
    seen: set[str] = set()
    offset: int | None = 0
    while offset is not None:
        page = await stack.svc.client.get(
            "/v1/releases", params={"limit": 2, "offset": offset}, headers=stack.auth()
        )
        body = page.json()
        assert len(body["items"]) <= 2
        seen |= {i["release_id"] for i in body["items"]}
        offset = body["next_offset"]
    assert seen == ids


async def _json(stack: Stack, path: str) -> Any:
    r = await stack.svc.client.get(path, headers=stack.auth())
    assert r.status_code == 200, r.text
    return r.json()


async def _async(value: Any) -> Any:
    return value


async def test_an_interrupted_download_is_logged_with_the_bytes_sent(stack: Stack) -> None:
    from kiban_release.api.releases import _stream
    from kiban_release.store import releases as store

    release_id = await stack.approve("app-cut")
    path = stack.fake.built[release_id].files["conditions.csv"]
    async with stack.svc.runtime.transaction() as tx:
        download_id = await store.start_download(
            await tx.session.connection(),
            release_id=release_id,
            file_name="conditions.csv",
            principal=RESEARCHER,
            source="192.0.2.7",
            at=stack.clock.now(),
        )
    stack.svc.context.settings.release.chunk_bytes = 4096
    stream = _stream(stack.svc.runtime, download_id, anyio.Path(path), "0" * 64)
    first = await anext(stream)
    await stream.aclose()  # the client went away after the first chunk
    async with stack.svc.runtime.engine.connect() as conn:
        row = (
            (
                await conn.execute(
                    select(release_downloads).where(release_downloads.c.id == download_id)
                )
            )
            .mappings()
            .one()
        )
    assert row["bytes"] == len(first) < path.stat().st_size
    assert row["completed"] is False
    assert row["sha256_ok"] is None
    assert row["finished_at"] is not None
