"""Concurrent requests are taken together (group commit) with the same outcomes as one by one:
each person their own request, one request per subject and scope however many ask at once, a
stronger action upgrading a weaker one in the same batch; on PostgreSQL across two replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kiban_common.bus import MemoryBroker
from kiban_optout.main import create_app
from kiban_optout.settings import OptoutSettings, RateLimitSettings
from kiban_testing import RunningService, embedded_settings, running_service

from .conftest import NOW, PATIENT_SUBJECT, Optout

KANA = "アイウエオカキクケコサシスセソタチツテト"


def _person(n: int) -> dict[str, Any]:
    return {
        **PATIENT_SUBJECT,
        "given_name": f"試{n}",
        "given_name_kana": KANA[n % 20] * (1 + n // 20),
    }


async def _count(svc: RunningService, table: str) -> int:
    async with svc.runtime.sessions() as session:
        conn = await session.connection()
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_concurrent_requests_for_distinct_people_share_transactions(optout: Optout) -> None:
    responses = await asyncio.gather(
        *(
            optout.post({"action": "stop", "subject": _person(n)}, optout.window())
            for n in range(40)
        )
    )
    assert [r.status_code for r in responses] == [202] * 40
    ids = {r.json()["optout_id"] for r in responses}
    assert len(ids) == 40
    assert {r.json()["outcome"] for r in responses} == {"created"}
    taker = optout.svc.context.taker
    assert taker is not None
    assert taker.batches < 40  # group commit: fewer transactions than requests
    events = await optout.published(40)
    assert {e.data.optout_id for e in events} == ids
    assert await _count(optout.svc, "optout_requests") == 40
    assert await _count(optout.svc, "optout_dispatches") == 40


async def test_one_subject_asked_many_times_at_once_is_one_request_ending_in_the_strongest_action(
    optout: Optout,
) -> None:
    bodies = [
        {"action": ("stop", "stop_and_delete")[n % 2], "subject": PATIENT_SUBJECT}
        for n in range(10)
    ]
    responses = await asyncio.gather(
        *(
            optout.post(body, optout.window(f"institution:13{n:08d}"))
            for n, body in enumerate(bodies)
        )
    )
    assert [r.status_code for r in responses] == [202] * 10
    assert len({r.json()["optout_id"] for r in responses}) == 1
    outcomes = [r.json()["outcome"] for r in responses]
    assert outcomes.count("created") == 1
    # the first stop_and_delete after a stop upgrades it; everything else repeats a request
    assert outcomes.count("upgraded") <= 1
    events = await optout.published(1 + outcomes.count("upgraded"))
    assert events[-1].data.action == "stop_and_delete"
    assert await _count(optout.svc, "optout_requests") == 1
    assert await _count(optout.svc, "optout_requesters") == 10
    optout_id = responses[0].json()["optout_id"]
    status = await optout.client.get(
        f"/v1/optouts/{optout_id}", headers=optout.window("institution:1300000003")
    )
    assert status.json()["action"] == "stop_and_delete"


async def test_two_replicas_on_postgresql_take_one_subject_once(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    url = postgres_cluster.create_database("optout_group_commit")

    settings = embedded_settings(
        OptoutSettings, tmp_path, database_url=url, rate_limit=RateLimitSettings(enabled=False)
    )
    # two replicas of one deployment: one database, the same keys (one state directory)
    async with (
        running_service(create_app, settings, broker=MemoryBroker()) as a,
        running_service(create_app, settings, broker=MemoryBroker()) as b,
    ):
        for svc in (a, b):
            svc.context.clock = lambda: NOW
        calls = []
        for n in range(24):
            svc = (a, b)[n % 2]
            body = {
                "action": ("stop", "stop_and_delete")[n % 3 == 2],
                "subject": PATIENT_SUBJECT,
            }
            if n % 4 == 3:
                body = {"action": "stop", "subject": _person(n)}
            calls.append(
                svc.client.post(
                    "/v1/optouts",
                    json=body,
                    headers=svc.auth(f"institution:13{n:08d}", ["optout:window"]),
                )
            )
        responses = await asyncio.gather(*calls)
        assert [r.status_code for r in responses] == [202] * 24
        same = {r.json()["optout_id"] for n, r in enumerate(responses) if n % 4 != 3}
        assert len(same) == 1
        assert await _count(a, "optout_requests") == 1 + 6  # the subject, and six others
        row = await a.client.get(
            f"/v1/optouts/{same.pop()}", headers=a.auth("institution:1300000002", ["optout:window"])
        )
        assert row.json()["action"] == "stop_and_delete"
