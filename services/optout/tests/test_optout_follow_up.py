"""After the request: duplicates, the upgrade to deletion, the status from the core services'
acknowledgements, who may read it, and the rate limit."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_optout.main import create_app
from kiban_optout.settings import RateLimitSettings
from kiban_testing import eventually, running_service

from .conftest import (
    CHILD_SUBJECT,
    NOW,
    OTHER_CLAIMS,
    PATIENT_SUBJECT,
    Optout,
    ack_event,
)


async def _status(optout: Optout, optout_id: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await optout.client.get(f"/v1/optouts/{optout_id}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _status_until(
    optout: Optout, optout_id: str, headers: dict[str, str], status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        return await _status(optout, optout_id, headers)

    return await eventually(probe, until=lambda b: b["status"] == status, timeout=10)


# -- idempotency and upgrade -----------------------------------------------------------------


async def test_the_same_request_twice_gives_the_same_id_and_one_event(optout: Optout) -> None:
    first = (await optout.post({"action": "stop"}, optout.patient())).json()
    second = (await optout.post({"action": "stop"}, optout.patient())).json()
    assert second["optout_id"] == first["optout_id"]
    assert second["received_at"] == first["received_at"]
    assert (first["outcome"], second["outcome"]) == ("created", "duplicate")
    # The counter filing for the same person gets the same request back too.
    third = (
        await optout.post({"action": "stop", "subject": PATIENT_SUBJECT}, optout.window())
    ).json()
    assert third["optout_id"] == first["optout_id"]
    await optout.published(1)


async def test_a_request_already_covered_by_a_wider_one_is_a_duplicate(optout: Optout) -> None:
    wide = (await optout.post({"action": "stop_and_delete"}, optout.patient())).json()
    narrow = await optout.post(
        {"action": "stop", "scope": "institution", "institution_code": "1312345678"},
        optout.patient(),
    )
    assert narrow.json()["optout_id"] == wide["optout_id"]
    assert narrow.json()["action"] == "stop_and_delete"
    assert narrow.json()["outcome"] == "duplicate"
    await optout.published(1)


async def test_stop_and_delete_after_stop_upgrades_the_request_and_tells_the_core_again(
    optout: Optout,
) -> None:
    stop = (await optout.post({"action": "stop"}, optout.patient())).json()
    (first,) = await optout.published(1)
    upgrade = (await optout.post({"action": "stop_and_delete"}, optout.patient())).json()
    assert upgrade["optout_id"] == stop["optout_id"]
    assert upgrade["outcome"] == "upgraded"
    assert upgrade["action"] == "stop_and_delete"
    assert upgrade["status"] == "received"
    _, second = await optout.published(2)
    assert second.data.action == "stop_and_delete"
    # A wire id of its own, so the core's acknowledgements of the earlier stop stay apart.
    assert second.data.optout_id != first.data.optout_id
    assert optout.unseal(second) == optout.unseal(first)
    # Asking for less afterwards changes nothing.
    again = (await optout.post({"action": "stop"}, optout.patient())).json()
    assert again["optout_id"] == stop["optout_id"]
    assert again["action"] == "stop_and_delete"
    await optout.published(2)


async def test_acknowledgements_of_the_earlier_stop_do_not_apply_the_upgrade(
    optout: Optout,
) -> None:
    headers = optout.patient()
    optout_id = (await optout.post({"action": "stop"}, headers)).json()["optout_id"]
    (stop,) = await optout.published(1)
    for service in ("intake", "linkage"):
        await optout.ack(service, stop.data.optout_id, matched=0)
    await _status_until(optout, optout_id, headers, "applied")
    optout.svc.context.clock = lambda: NOW + timedelta(days=3)
    await optout.post({"action": "stop_and_delete"}, headers)
    _, delete = await optout.published(2)
    body = await _status(optout, optout_id, headers)
    assert body["status"] == "received"
    assert body["action"] == "stop_and_delete"
    assert [(h["action"], h["status"]) for h in body["history"]] == [
        ("stop", "applied"),
        ("stop_and_delete", "received"),
    ]
    for service in ("intake", "linkage"):
        await optout.ack(service, delete.data.optout_id, matched=0)
    await _status_until(optout, optout_id, headers, "applied")


# -- status from the acknowledgements --------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["intake", "linkage", "anonymizer"])))
async def test_status_is_applied_once_all_three_acknowledge_in_any_order_and_twice(
    optout: Optout, order: tuple[str, ...]
) -> None:
    headers = optout.patient()
    optout_id = (await optout.post({"action": "stop_and_delete"}, headers)).json()["optout_id"]
    (event,) = await optout.published()
    wire_id = event.data.optout_id
    acks = {
        "intake": ack_event("intake", wire_id, matched=1, purged={"submissions": 3}),
        "linkage": ack_event("linkage", wire_id, matched=1, purged={"identities": 1}),
        "anonymizer": ack_event("anonymizer", wire_id, matched=1, purged={"rows": 7}),
    }
    from kiban_common.events import encode

    for n, service in enumerate(order, start=1):
        await optout.broker.append([encode(acks[service])])
        await eventually(lambda: _acks_stored(optout), until=lambda stored, n=n: stored == n)
        body = await _status(optout, optout_id, headers)
        assert body["status"] == ("applied" if n == 3 else "applying")
        # The anonymizer counts only once linkage has said how many persons it matched.
        anonymizer_in = "linkage" in order[:n] and "anonymizer" in order[:n]
        assert (body["applied"]["anonymizer"] is not None) == anonymizer_in
        for other in ("intake", "linkage"):
            assert (body["applied"][other] is not None) == (other in order[:n])
    # Every acknowledgement delivered a second time, and a re-sent one with a new event id.
    for service in order:
        await optout.broker.append([encode(acks[service])])
    await optout.ack("intake", wire_id, matched=1, purged={"submissions": 99})
    await optout.ack("linkage", "some-other-request", matched=5)

    await eventually(lambda: _acks_stored(optout), until=lambda stored: stored == 5)
    again = await _status(optout, optout_id, headers)
    assert again["status"] == "applied"
    assert again["applied"]["intake"]["purged"] == 3
    assert again["applied"]["linkage"]["purged"] == 1
    assert again["applied"]["anonymizer"]["purged"] == 7
    assert again["matched_persons"] == 1
    assert again["applied"]["intake"]["at"].startswith("2026-06-01T00:00:00")
    assert again["applied"]["intake"]["acknowledgements"] == 2  # counted, not added up
    assert {k: v for k, v in again["applied"].items() if k != "intake"} == {
        k: v for k, v in body["applied"].items() if k != "intake"
    }
    assert again["applied_at"] == body["applied_at"]


async def _acks_stored(optout: Optout) -> int:
    from sqlalchemy import text

    async with optout.svc.runtime.sessions() as session:
        conn = await session.connection()
        return int((await conn.execute(text("SELECT count(*) FROM optout_acks"))).scalar_one())


async def test_anonymizer_applies_after_one_acknowledgement_per_person_linkage_matched(
    optout: Optout,
) -> None:
    headers = optout.patient()
    optout_id = (await optout.post({"action": "stop_and_delete"}, headers)).json()["optout_id"]
    (event,) = await optout.published()
    wire_id = event.data.optout_id
    await optout.ack("anonymizer", wire_id, purged={"rows": 3})  # before linkage says 2 persons
    await optout.ack("intake", wire_id)
    await optout.ack("linkage", wire_id, matched=2)
    body = await _status_until(optout, optout_id, headers, "applying")

    async def linkage_in() -> dict[str, Any]:
        return await _status(optout, optout_id, headers)

    body = await eventually(linkage_in, until=lambda b: b["matched_persons"] == 2, timeout=10)
    assert body["applied"]["anonymizer"] is None
    await optout.ack("anonymizer", wire_id, purged={"rows": 4})
    body = await _status_until(optout, optout_id, headers, "applied")
    assert body["applied"]["anonymizer"]["purged"] == 7
    assert body["applied"]["anonymizer"]["acknowledgements"] == 2


async def test_nobody_matched_is_applied_without_anonymizer_acknowledgements(
    optout: Optout,
) -> None:
    headers = optout.patient()
    optout_id = (await optout.post({"action": "stop"}, headers)).json()["optout_id"]
    (event,) = await optout.published()
    assert (await _status(optout, optout_id, headers))["status"] == "received"
    await optout.ack("linkage", event.data.optout_id, matched=0)
    await optout.ack("intake", event.data.optout_id, matched=0, purged={})
    body = await _status_until(optout, optout_id, headers, "applied")
    assert body["matched_persons"] == 0
    assert body["applied"]["anonymizer"]["purged"] == 0


# -- who may read ----------------------------------------------------------------------------


async def test_another_patients_request_is_404_and_absent_from_their_list(optout: Optout) -> None:
    mine = (await optout.post({"action": "stop"}, optout.patient())).json()["optout_id"]
    other = optout.patient("patient:p2", OTHER_CLAIMS)
    theirs = (await optout.post({"action": "stop"}, other)).json()["optout_id"]
    response = await optout.client.get(f"/v1/optouts/{mine}", headers=other)
    assert response.status_code == 404
    missing = await optout.client.get("/v1/optouts/no-such-id", headers=other)
    assert response.json() == missing.json()
    listed = (await optout.client.get("/v1/optouts/me", headers=other)).json()
    assert [o["optout_id"] for o in listed["optouts"]] == [theirs]
    own = (await optout.client.get("/v1/optouts/me", headers=optout.patient())).json()
    assert [o["optout_id"] for o in own["optouts"]] == [mine]
    # A window sees what it filed, and nothing else.
    assert (
        await optout.client.get(f"/v1/optouts/{mine}", headers=optout.window())
    ).status_code == 404


async def test_a_patient_sees_requests_about_them_and_those_they_filed_for_others(
    optout: Optout,
) -> None:
    filed_at_counter = (
        await optout.post({"action": "stop", "subject": PATIENT_SUBJECT}, optout.window())
    ).json()["optout_id"]
    for_child = (
        await optout.post(
            {"action": "stop", "requester": "guardian", "subject": CHILD_SUBJECT},
            optout.patient(),
        )
    ).json()["optout_id"]
    listed = (await optout.client.get("/v1/optouts/me", headers=optout.patient())).json()
    assert {o["optout_id"] for o in listed["optouts"]} == {filed_at_counter, for_child}
    body = await _status(optout, filed_at_counter, optout.patient())
    assert body["requester"] == "institution_window"
    assert body["applied"] == {"intake": None, "linkage": None, "anonymizer": None}
    assert body["matched_persons"] is None
    # The child's request is not the counter's to see.
    assert (
        await optout.client.get(f"/v1/optouts/{for_child}", headers=optout.window())
    ).status_code == 404
    # An operator sees any.
    admin = optout.svc.auth("operator:o1", ["admin"])
    assert (await optout.client.get(f"/v1/optouts/{for_child}", headers=admin)).status_code == 200


async def test_reading_needs_an_optout_scope(optout: Optout) -> None:
    mine = (await optout.post({"action": "stop"}, optout.patient())).json()["optout_id"]
    researcher = optout.svc.auth("researcher:r1", ["review:apply"])
    assert (await optout.client.get(f"/v1/optouts/{mine}", headers=researcher)).status_code == 403
    assert (await optout.client.get("/v1/optouts/me", headers=optout.window())).status_code == 403
    assert (await optout.client.get(f"/v1/optouts/{mine}")).status_code == 401


# -- rate limit ------------------------------------------------------------------------------


async def test_a_principal_beyond_its_rate_limit_gets_429_with_retry_after(
    settings_for: Any,
) -> None:
    limits = RateLimitSettings(burst=3, per_second=0.1, window_burst=2, window_per_second=0.5)
    broker = MemoryBroker()
    async with running_service(create_app, settings_for(rate_limit=limits), broker=broker) as svc:
        svc.context.clock = lambda: NOW
        optout = Optout(svc, broker)
        codes = [
            (await optout.post({"action": "stop"}, optout.patient())).status_code for _ in range(4)
        ]
        assert codes == [202, 202, 202, 429]
        limited = await optout.client.get("/v1/optouts/me", headers=optout.patient())
        assert limited.status_code == 429
        assert limited.json()["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        # Another principal has its own bucket; a window its own, smaller here.
        other = optout.patient("patient:p2", OTHER_CLAIMS)
        assert (await optout.post({"action": "stop"}, other)).status_code == 202
        window = [
            (
                await optout.post({"action": "stop", "subject": PATIENT_SUBJECT}, optout.window())
            ).status_code
            for _ in range(3)
        ]
        assert window == [202, 202, 429]
