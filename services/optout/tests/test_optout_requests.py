"""POST /v1/optouts: each requester and action, the token's claims against the body, the
refusals (nothing stored), and what is stored and published."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from kiban_common.events import OPTOUT_REQUESTED

from .conftest import (
    CHILD_SUBJECT,
    DECEASED_SUBJECT,
    NOW,
    PATIENT_SUBJECT,
    WINDOW,
    Optout,
)


async def _count(optout: Optout, table: str) -> int:
    async with optout.svc.runtime.sessions() as session:
        conn = await session.connection()
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def _nothing_stored(optout: Optout) -> None:
    assert await _count(optout, "optout_requests") == 0
    assert await _count(optout, "optout_requesters") == 0
    assert await _count(optout, "kiban_outbox") == 0
    assert optout.requested() == []


@pytest.mark.parametrize("action", ["stop", "stop_and_delete"])
async def test_a_patient_stops_for_self_with_the_subject_from_the_token(
    optout: Optout, action: str
) -> None:
    response = await optout.post({"action": action, "requester": "self"}, optout.patient())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "received"
    assert body["outcome"] == "created"
    assert body["received_at"].startswith("2026-06-01T00:00:00")

    (event,) = await optout.published()
    assert event.type == OPTOUT_REQUESTED
    assert event.key == body["optout_id"]
    assert event.data.optout_id == body["optout_id"]
    assert event.data.action == action
    assert event.data.scope == "all"
    assert event.data.requester == "self"
    assert event.data.subject.startswith("s1.")
    assert optout.unseal(event) == {
        **PATIENT_SUBJECT,
        "postal_code": None,
        "institution_patient_id": None,
        "deceased_on": None,
    }


async def test_identity_is_stored_and_published_only_encrypted(optout: Optout) -> None:
    await optout.post({"action": "stop", "subject": {"postal_code": "100-0001"}}, optout.patient())
    async with optout.svc.runtime.sessions() as session:
        conn = await session.connection()
        rows = (await conn.execute(text("SELECT * FROM optout_requests"))).all()
        outbox = (await conn.execute(text("SELECT value FROM kiban_outbox"))).all()
    stored = repr(rows) + repr(outbox) + repr(optout.broker.logs)
    for value in ("架空", "カクウ", "1980-01-02", "100-0001"):
        assert value not in stored
    assert rows[0].subject.startswith("v1.")


async def test_a_body_subject_written_differently_but_equal_to_the_claims_is_accepted(
    optout: Optout,
) -> None:
    first = await optout.post({"action": "stop"}, optout.patient())
    same = {
        "family_name": "架空 ",
        "given_name": "太郎",
        "family_name_kana": "かくう",
        "given_name_kana": "ﾀﾛｳ",
        "birth_date": "昭和55年1月2日",
        "sex": "男",
        "postal_code": "１００－０００１",
    }
    second = await optout.post({"action": "stop", "subject": same}, optout.patient())
    assert second.status_code == 202, second.text
    assert second.json()["optout_id"] == first.json()["optout_id"]
    assert second.json()["outcome"] == "duplicate"


@pytest.mark.parametrize(
    ("field", "value"),
    [("birth_date", "1980-01-03"), ("family_name", "別人"), ("sex", "female")],
)
async def test_a_body_subject_that_differs_from_the_claims_is_403_and_stores_nothing(
    optout: Optout, field: str, value: str
) -> None:
    subject = {**PATIENT_SUBJECT, field: value}
    response = await optout.post({"action": "stop", "subject": subject}, optout.patient())
    assert response.status_code == 403
    assert response.json()["code"] == "subject_mismatch"
    assert f"subject.{field}" in response.json()["message"]
    assert value not in response.text
    await _nothing_stored(optout)


async def test_self_needs_a_patient_token_with_the_identity_claims(optout: Optout) -> None:
    as_window = await optout.post(
        {"action": "stop", "requester": "self", "subject": PATIENT_SUBJECT}, optout.window()
    )
    assert as_window.status_code == 403
    assert as_window.json()["code"] == "insufficient_scope"
    bare = optout.svc.auth("patient:p9", ["optout:self"], {"family_name": "架空"})
    no_claims = await optout.post({"action": "stop"}, bare)
    assert no_claims.status_code == 403
    assert no_claims.json()["code"] == "identity_claims_missing"
    assert "birthdate" in no_claims.json()["message"]
    researcher = optout.svc.auth("researcher:r1", ["review:apply"])
    assert (await optout.post({"action": "stop"}, researcher)).status_code == 403
    await _nothing_stored(optout)


async def test_a_token_without_an_optout_scope_is_403_whatever_the_body(optout: Optout) -> None:
    researcher = optout.svc.auth("researcher:r2", ["review:apply"])
    for body in ({}, {"action": "nonsense"}, {"action": "stop"}):
        refused = await optout.post(body, researcher)
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
    await _nothing_stored(optout)


@pytest.mark.parametrize("action", ["stop", "stop_and_delete"])
@pytest.mark.parametrize("by", ["patient", "window"])
async def test_a_guardian_stops_for_a_minor(optout: Optout, action: str, by: str) -> None:
    headers = optout.patient("patient:parent") if by == "patient" else optout.window()
    response = await optout.post(
        {"action": action, "requester": "guardian", "subject": CHILD_SUBJECT}, headers
    )
    assert response.status_code == 202, response.text
    (event,) = await optout.published()
    assert event.data.requester == "guardian"
    assert event.data.action == action
    assert optout.unseal(event)["given_name"] == "花子"


async def test_a_guardian_may_ask_until_the_day_before_the_18th_birthday(optout: Optout) -> None:
    # NOW is 2026-06-01 in Tokyo.
    seventeen = {**CHILD_SUBJECT, "birth_date": "2008-06-02"}
    eighteen = {**CHILD_SUBJECT, "birth_date": "2008-06-01", "given_name": "成人"}
    ok = await optout.post(
        {"action": "stop", "requester": "guardian", "subject": seventeen}, optout.window()
    )
    assert ok.status_code == 202, ok.text
    adult = await optout.post(
        {"action": "stop", "requester": "guardian", "subject": eighteen}, optout.window()
    )
    assert adult.status_code == 422
    assert adult.json()["code"] == "not_a_minor"
    assert "2008" not in adult.text
    assert await _count(optout, "optout_requests") == 1


@pytest.mark.parametrize("action", ["stop", "stop_and_delete"])
@pytest.mark.parametrize("by", ["patient", "window"])
async def test_the_bereaved_family_stops_for_a_deceased_person(
    optout: Optout, action: str, by: str
) -> None:
    headers = optout.patient("patient:widow") if by == "patient" else optout.window()
    response = await optout.post(
        {"action": action, "requester": "bereaved_family", "subject": DECEASED_SUBJECT}, headers
    )
    assert response.status_code == 202, response.text
    (event,) = await optout.published()
    assert event.data.requester == "bereaved_family"
    assert optout.unseal(event)["deceased_on"] == "2025-12-24"


async def test_the_bereaved_family_without_a_death_date_is_refused(optout: Optout) -> None:
    alive = {k: v for k, v in DECEASED_SUBJECT.items() if k != "deceased_on"}
    response = await optout.post(
        {"action": "stop", "requester": "bereaved_family", "subject": alive}, optout.window()
    )
    assert response.status_code == 422
    assert response.json()["code"] == "death_date_required"
    future = {**DECEASED_SUBJECT, "deceased_on": "2026-06-02"}
    response = await optout.post(
        {"action": "stop", "requester": "bereaved_family", "subject": future}, optout.window()
    )
    assert response.status_code == 422
    assert "subject.deceased_on" in response.json()["message"]
    await _nothing_stored(optout)


@pytest.mark.parametrize("action", ["stop", "stop_and_delete"])
async def test_an_institution_window_files_for_a_patient_at_the_counter(
    optout: Optout, action: str
) -> None:
    subject = {**PATIENT_SUBJECT, "institution_patient_id": "P-0001", "postal_code": "1000001"}
    response = await optout.post({"action": action, "subject": subject}, optout.window())
    assert response.status_code == 202, response.text
    (event,) = await optout.published()
    assert event.data.requester == "institution_window"
    assert event.data.scope == "all"
    assert event.data.institution_code is None
    opened = optout.unseal(event)
    assert opened["institution_patient_id"] == "P-0001"
    assert opened["postal_code"] == "100-0001"


async def test_scope_institution_limits_the_request_to_the_windows_institution(
    optout: Optout,
) -> None:
    response = await optout.post(
        {"action": "stop", "scope": "institution", "subject": PATIENT_SUBJECT}, optout.window()
    )
    assert response.status_code == 202, response.text
    (event,) = await optout.published()
    assert event.data.scope == "institution"
    assert event.data.institution_code == WINDOW.removeprefix("institution:")
    other = await optout.post(
        {
            "action": "stop",
            "scope": "institution",
            "institution_code": "2712345678",
            "subject": PATIENT_SUBJECT,
        },
        optout.window(),
    )
    assert other.status_code == 403
    assert other.json()["code"] == "institution_mismatch"


async def test_a_patient_limits_a_request_to_one_institution_by_its_code(optout: Optout) -> None:
    missing = await optout.post({"action": "stop", "scope": "institution"}, optout.patient())
    assert missing.status_code == 422
    malformed = await optout.post(
        {"action": "stop", "scope": "institution", "institution_code": "ABC"}, optout.patient()
    )
    assert malformed.status_code == 422
    assert malformed.json()["code"] == "invalid_institution_code"
    await _nothing_stored(optout)
    ok = await optout.post(
        {"action": "stop", "scope": "institution", "institution_code": "1312345678"},
        optout.patient(),
    )
    assert ok.status_code == 202
    (event,) = await optout.published()
    assert event.data.institution_code == "1312345678"


async def test_an_institution_outside_the_configured_list_is_unknown(
    settings_for: Any,
) -> None:
    from kiban_common.bus import MemoryBroker
    from kiban_optout.main import create_app
    from kiban_optout.settings import OptoutRules
    from kiban_testing import running_service

    settings = settings_for(optout=OptoutRules(known_institutions=["1312345678"]))
    broker = MemoryBroker()
    async with running_service(create_app, settings, broker=broker) as svc:
        svc.context.clock = lambda: NOW
        optout = Optout(svc, broker)
        unknown = await optout.post(
            {"action": "stop", "scope": "institution", "institution_code": "2712345678"},
            optout.patient(),
        )
        assert unknown.status_code == 422
        assert unknown.json()["code"] == "unknown_institution"
        stranger = await optout.post(
            {"action": "stop", "subject": PATIENT_SUBJECT}, optout.window("institution:2712345678")
        )
        assert stranger.status_code == 422
        await _nothing_stored(optout)
        known = await optout.post(
            {"action": "stop", "scope": "institution", "institution_code": "1312345678"},
            optout.patient(),
        )
        assert known.status_code == 202


@pytest.mark.parametrize(
    ("subject", "field"),
    [
        ({k: v for k, v in PATIENT_SUBJECT.items() if k != "birth_date"}, "birth_date"),
        ({k: v for k, v in PATIENT_SUBJECT.items() if k != "family_name_kana"}, "family_name_kana"),
        ({**PATIENT_SUBJECT, "birth_date": "2027-01-01"}, "birth_date"),
        ({**PATIENT_SUBJECT, "birth_date": "昭和99年1月1日"}, "birth_date"),
        ({**PATIENT_SUBJECT, "family_name_kana": "架空"}, "family_name_kana"),
        ({**PATIENT_SUBJECT, "sex": "Q7"}, "sex"),
        ({**PATIENT_SUBJECT, "postal_code": "12"}, "postal_code"),
    ],
)
async def test_a_missing_or_invalid_subject_field_is_422_naming_it_and_stores_nothing(
    optout: Optout, subject: dict[str, Any], field: str
) -> None:
    response = await optout.post({"action": "stop", "subject": subject}, optout.window())
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_subject"
    assert f"subject.{field}" in response.json()["message"]
    for value in subject.values():
        assert str(value) not in response.json()["message"]
    await _nothing_stored(optout)


async def test_a_counter_request_needs_a_subject_and_a_known_action(optout: Optout) -> None:
    no_subject = await optout.post({"action": "stop"}, optout.window())
    assert no_subject.status_code == 422
    assert "subject" in no_subject.json()["message"]
    bad_action = await optout.post({"action": "pause", "subject": PATIENT_SUBJECT}, optout.window())
    assert bad_action.status_code == 422
    unknown_field = await optout.post(
        {"action": "stop", "subject": {**PATIENT_SUBJECT, "nickname": "x"}}, optout.window()
    )
    assert unknown_field.status_code == 422
    await _nothing_stored(optout)


async def test_no_identity_reaches_the_logs(
    optout: Optout, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await optout.post({"action": "stop"}, optout.patient())
    await optout.post(
        {"action": "stop", "subject": {**PATIENT_SUBJECT, "sex": "x"}}, optout.window()
    )
    await optout.post(
        {"action": "stop", "subject": {**PATIENT_SUBJECT, "birth_date": "1980-01-03"}},
        optout.patient(),
    )
    logged = caplog.text
    for value in ("架空", "カクウ", "1980-01-02", "1980-01-03", "太郎"):
        assert value not in logged
