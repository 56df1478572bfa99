"""The research store: linked records in (merges followed, redelivery harmless, no free text),
purges out (every row, in the event's transaction, acknowledged with counts)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from anonymizer_kit import ADMIN, FREE_TEXT, Peer, pseudonym, record, stats
from sqlalchemy import select

from kiban_anonymizer.store.tables import EVENT_TABLES, persons, purged_persons
from kiban_common.events import ANONYMIZER_OPTOUT_APPLIED, OptoutAppliedV1
from kiban_testing import eventually
from kiban_testing.services import RunningService

TABLES = ["conditions", "observations", "medications", "allergies", "procedures", "encounters"]


async def _all_rows(svc: RunningService) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    async with svc.runtime.transaction() as tx:
        connection = await tx.session.connection()
        for name, table in {"persons": persons, **EVENT_TABLES}.items():
            out[name] = [dict(r._mapping) for r in await connection.execute(select(table))]
    return out


async def _rows_of(svc: RunningService, person: str) -> int:
    rows = await _all_rows(svc)
    return sum(
        1
        for table in rows.values()
        for row in table
        if row.get("person") == person or row.get("pseudonym") == person
    )


async def test_linked_records_land_in_query_friendly_tables_without_free_text(
    service: RunningService, peer: Peer
) -> None:
    rng = random.Random(1)
    await peer.linked(record(1, rng, codes=("I50.0", "E11.9")))
    await eventually(lambda: stats(service), until=lambda s: s["persons"] == 1)
    rows = await _all_rows(service)
    assert {r["code"] for r in rows["conditions"]} == {"I50.0", "E11.9"}
    assert all(r["code_system"] == "icd10" and r["onset_date"] for r in rows["conditions"])
    observation = next(r for r in rows["observations"] if r["code_system"] == "loinc")
    assert observation["code"] == "33762-6"
    assert observation["value_number"] > 0
    jlac = next(r for r in rows["observations"] if r["code_system"] == "jlac10")
    assert jlac["value_number"] is None
    assert jlac["value_code"] is None
    for table in TABLES:
        assert len(rows[table]) >= 1, table
    person = rows["persons"][0]
    assert person["pseudonym"] == pseudonym(1)
    assert person["birth_date"]
    assert person["sex"] in ("male", "female")
    assert person["postal_code"]
    assert FREE_TEXT not in repr(rows)


async def test_a_record_delivered_again_replaces_its_rows(
    service: RunningService, peer: Peer
) -> None:
    first = record(1, random.Random(1))
    await peer.linked(first)
    await peer.linked(first.model_copy(update={"submission_id": "sub-again"}))
    await eventually(
        lambda: stats(service), until=lambda s: s["rows"]["conditions"] == 1, timeout=5
    )
    counts = await stats(service)
    assert counts["persons"] == 1
    assert counts["rows"] == dict.fromkeys(TABLES, 1) | {"observations": 2}


async def test_a_merge_rekeys_the_absorbed_persons_rows(
    service: RunningService, peer: Peer
) -> None:
    rng = random.Random(2)
    await peer.linked(record(1, rng))
    await peer.linked(record(2, rng))
    await eventually(lambda: stats(service), until=lambda s: s["persons"] == 2)
    merged = record(3, rng, person=pseudonym(1), merged_from=[pseudonym(2)])
    merged = merged.model_copy(update={"resources": []})
    await peer.linked(merged)
    await eventually(lambda: stats(service), until=lambda s: s["persons"] == 1)
    rows = await _all_rows(service)
    assert {r["person"] for t in TABLES for r in rows[t]} == {pseudonym(1)}
    assert len(rows["conditions"]) == 2  # both persons' diagnoses, now one person's


async def test_purge_removes_every_row_acknowledges_with_counts_and_drops_later_records(
    service: RunningService, peer: Peer
) -> None:
    rng = random.Random(3)
    for n in (1, 2):
        await peer.linked(record(n, rng, codes=("I50.0", "I10")))
    await eventually(lambda: stats(service), until=lambda s: s["persons"] == 2)
    before = await _rows_of(service, pseudonym(1))
    assert before == 1 + 2 + 2 + 1 + 1 + 1 + 1

    await peer.purged(pseudonym(1), "opt-1")
    acks = await peer.read(ANONYMIZER_OPTOUT_APPLIED, count=1)
    ack = acks[0]
    assert isinstance(ack, OptoutAppliedV1)
    assert (ack.optout_id, ack.service, ack.matched) == ("opt-1", "anonymizer", 1)
    assert ack.purged == {
        "persons": 1,
        "conditions": 2,
        "observations": 2,
        "medications": 1,
        "allergies": 1,
        "procedures": 1,
        "encounters": 1,
    }
    assert await _rows_of(service, pseudonym(1)) == 0
    assert await _rows_of(service, pseudonym(2)) == before  # nobody else touched

    # A record for the purged person that arrives later is dropped.
    await peer.linked(record(1, rng))
    await peer.linked(record(4, rng))
    await eventually(lambda: stats(service), until=lambda s: s["persons"] == 2)
    assert await _rows_of(service, pseudonym(1)) == 0
    async with service.runtime.transaction() as tx:
        connection = await tx.session.connection()
        remembered = [r[0] for r in await connection.execute(select(purged_persons.c.pseudonym))]
    assert remembered == [pseudonym(1)]
    assert (await stats(service))["purged_persons"] == 1


async def test_admin_api_needs_the_admin_scope(service: RunningService) -> None:
    assert (await service.client.get("/v1/stats")).status_code == 401
    researcher = service.auth("researcher:r1", ["release:download"])
    assert (await service.client.get("/v1/stats", headers=researcher)).status_code == 403
    answer = await service.client.get("/v1/builds/bld-none", headers=service.auth(*ADMIN))
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


async def test_a_purge_racing_a_batch_of_records_leaves_no_row_of_the_person(
    tmp_path: Path, postgres_cluster: Any
) -> None:
    """Purges have their own consumer group: a record-linked batch holding the purge lock
    makes a concurrent purge wait, then the purge deletes what the batch stored."""
    import asyncio

    from anonymizer_kit import settings_for

    from kiban_anonymizer.main import create_app
    from kiban_anonymizer.store import research
    from kiban_common.bus import MemoryBroker
    from kiban_testing import running_service

    url = postgres_cluster.create_database("anonymizer_purge_race")
    settings = settings_for(tmp_path, database_url=url)
    rng = random.Random(5)
    async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
        now = datetime.now(UTC)
        purge_started = asyncio.Event()

        async def purge() -> None:
            async with svc.runtime.transaction() as tx:
                purge_started.set()
                await research.purge_person(tx.session, pseudonym(1), "opt-race", now)

        async with svc.runtime.transaction() as tx:  # the record batch, as on_record_linked
            await research.lock_purge_seq(tx.session)
            racing = asyncio.create_task(purge())
            await purge_started.wait()
            await asyncio.sleep(0.2)  # the purge is now waiting for the batch's lock
            assert not racing.done()
            await research.store_record(tx.session, record(1, rng), now)
        await racing
        assert await _rows_of(svc, pseudonym(1)) == 0
        # and the other order: the purge committed first, the record is dropped
        async with svc.runtime.transaction() as tx:
            await research.lock_purge_seq(tx.session)
            assert await research.store_record(tx.session, record(1, rng), now) == -1
        assert await _rows_of(svc, pseudonym(1)) == 0


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_batch_stored_together_ends_as_the_same_records_stored_one_by_one(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    """`store_records` (a consumer batch at once) against `store_record` in turn: repeated
    persons, a redelivered record, a merge in the middle, a purged person; on SQLite and on
    PostgreSQL."""
    from anonymizer_kit import settings_for

    from kiban_anonymizer.main import create_app
    from kiban_anonymizer.store import research
    from kiban_common.bus import MemoryBroker
    from kiban_testing import running_service

    rng = random.Random(11)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    batch = [record(n % 4, rng, codes=("I50.0", "E11.9")[: 1 + n % 2]) for n in range(12)]
    batch.insert(5, batch[2])  # delivered again
    batch.insert(8, record(3, rng, merged_from=[pseudonym(1)]))  # person 1 merged into 3
    batch.append(record(2, rng))
    outcomes, states = [], []
    for together in (False, True):
        (tmp_path / str(together)).mkdir()
        overrides: dict[str, Any] = {}
        if database == "postgresql":
            cluster = request.getfixturevalue("postgres_cluster")
            overrides["database_url"] = cluster.create_database(f"anonymizer_batch_{int(together)}")
        settings = settings_for(tmp_path / str(together), **overrides)
        async with running_service(create_app, settings, broker=MemoryBroker()) as svc:
            async with svc.runtime.transaction() as tx:
                await research.purge_person(tx.session, pseudonym(0), "opt-1", now)
            async with svc.runtime.transaction() as tx:
                if together:
                    outcome = await research.store_records(tx.session, batch, now)
                else:
                    outcome = [await research.store_record(tx.session, r, now) for r in batch]
            outcomes.append(outcome)
            rows = await _all_rows(svc)
            states.append(
                {
                    name: sorted(repr({k: v for k, v in row.items() if k != "id"}) for row in table)
                    for name, table in rows.items()
                }
            )
    assert outcomes[0] == outcomes[1]
    assert -1 in outcomes[0]  # the purged person's records were dropped
    assert states[0] == states[1]
    assert len(states[0]["persons"]) == 3  # persons 1, 2, 3 (0 purged)
