"""Replicas on one PostgreSQL (the chart runs two in one consumer group) keep their match
indexes in memory in step with the vault: the vault lock serializes their batches, each
replica applies the others' changes before linking, a rolled-back batch leaves nothing in
memory, and a restart rebuilds the same index. All identities are synthetic."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from kiban_common.bus import MemoryBroker
from kiban_common.events import LINKAGE_OPTOUT_APPLIED, RECORD_LINKED
from kiban_linkage.linking import link_records
from kiban_linkage.main import create_app
from kiban_linkage.replica import hold
from kiban_linkage.settings import LinkageSettings
from kiban_testing import embedded_settings, eventually, running_service

if TYPE_CHECKING:
    from conftest import Linked

X, Y, Z = "1312345678", "2712345678", "3312345678"


FAMILY = [("佐藤", "サトウ"), ("北浦", "キタウラ"), ("髙橋", "タカハシ"), ("田中", "タナカ")]
GIVEN = [("太郎", "タロウ"), ("花子", "ハナコ"), ("健", "ケン"), ("美咲", "ミサキ")]


def person(i: int, **changes: Any) -> dict[str, Any]:
    """Synthetic person i (i < 16: distinct names, birth date, address and insurer)."""
    family, given = FAMILY[i % 4], GIVEN[i // 4 % 4]
    identity: dict[str, Any] = {
        "institution_patient_id": f"P-{i}",
        "family_name": family[0],
        "given_name": given[0],
        "family_name_kana": family[1],
        "given_name_kana": given[1],
        "birth_date": f"{1940 + 3 * i}-{1 + i % 12:02d}-{1 + (7 * i) % 28:02d}",
        "sex": "male" if i % 2 else "female",
        "postal_code": f"{100 + 37 * i:03d}-{(97 * i) % 10000:04d}",
        "address": f"東京都千代田区千代田{i}-{i}",
        "insurance_numbers": [f"{10_000_000 + 7919 * i}"],
        "deceased_on": None,
    }
    identity.update(changes)
    return identity


def published(event_type: str, *replicas: Linked) -> list[Any]:
    """What the replicas published: they share the database, so its outbox, and whichever
    relay publishes a row puts it on its own bus."""
    return [e for r in replicas for e in r.published(event_type)]


async def settle(*group: Linked) -> None:
    """Wait until everything sent to any of the replicas has taken effect (they share the
    database's processed-event table and outbox, so one replica's own count says little)."""
    first = group[0]
    own, first.sent = first.sent, sum(r.sent for r in group)
    try:
        await first.settled()
    finally:
        first.sent = own


@asynccontextmanager
async def replicas(
    tmp_path: Path, url: str, harness: type[Linked], n: int = 2
) -> AsyncIterator[list[Linked]]:
    """`n` linkage services on one database (shared keys), each with its own in-process bus:
    like two replicas that were given different partitions of the topics."""
    settings = embedded_settings(LinkageSettings, tmp_path, database_url=url)
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(n):  # one at a time: each applies the migrations on start
            broker = MemoryBroker()
            svc = await stack.enter_async_context(
                running_service(create_app, settings, broker=broker)
            )
            linked = harness(svc, broker=broker)
            await eventually(_loaded(linked))
            out.append(linked)
        yield out


async def caught_up(*group: Linked) -> None:
    """Each replica takes the vault lock once: it applies every committed change, its own
    included (what its keep-up loop does within seconds when idle)."""
    for r in group:
        async with r.svc.runtime.transaction() as tx:
            await hold(r.ctx, tx)


def _loaded(linked: Linked) -> Any:
    async def probe() -> bool:
        return linked.ctx.replica.loaded.is_set()

    return probe


def _database(postgres_cluster: Any) -> str:
    url: str = postgres_cluster.create_database(f"linkage_{secrets.token_hex(3)}")
    return url


async def test_two_replicas_linking_the_same_people_at_once_make_one_person_each(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness) as (a, b):
        people = [person(i) for i in range(12)]
        # the same people reach both replicas at once, from two institutions
        at_a = [a.record(p, institution=X) for p in people]
        at_b = [
            b.record({**p, "institution_patient_id": f"Q-{i}"}, institution=Y)
            for i, p in enumerate(people)
        ]
        await asyncio.gather(a.send_together(*at_a), b.send_together(*at_b))
        await settle(a, b)
        stats = await a.stats()
        assert (stats["records"], stats["persons"], stats["links"]) == (24, 12, 12)
        forwarded: dict[str, set[str]] = {}
        for e in published(RECORD_LINKED, a, b):
            forwarded.setdefault(e.data.person, set()).add(e.data.institution_code)
        # one pseudonym per person, with the records of both institutions
        assert len(forwarded) == 12
        assert all(institutions == {X, Y} for institutions in forwarded.values())


async def test_a_replica_waits_for_the_other_replicas_batch_to_commit_and_then_sees_it(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness) as (a, b):

        async def link_at_b() -> None:
            async with b.svc.runtime.transaction() as tx:
                await link_records(
                    b.ctx, tx, [b.record(person(5, institution_patient_id="Y-5"), institution=Y)]
                )

        async with a.svc.runtime.transaction() as tx:
            await link_records(a.ctx, tx, [a.record(person(5), institution=X)])
            at_b = asyncio.create_task(link_at_b())
            await asyncio.sleep(0.5)
            assert not at_b.done()  # B waits for the vault lock A holds until it commits
        await at_b
        stats = await a.stats()
        assert (stats["records"], stats["persons"], stats["links"]) == (2, 1, 1)


async def test_a_record_added_at_one_replica_is_a_candidate_at_the_other_in_its_next_batch(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness) as (a, b):
        await a.receive(person(1), institution=X)
        await settle(a, b)
        (first,) = published(RECORD_LINKED, a, b)
        await b.receive(
            person(1, institution_patient_id="B-7", family_name_kana="やまだ"), institution=Y
        )
        await settle(a, b)
        (_, second) = published(RECORD_LINKED, a, b)
        assert second.data.institution_code == Y
        assert second.data.person == first.data.person
        # A's record, and B's own once B has seen its batch committed (its keep-up loop)

        async def indexed() -> int:
            return len(b.ctx.replica.index)

        await eventually(indexed, until=lambda n: n == 2)


async def test_a_record_deleted_by_an_optout_at_one_replica_is_never_linked_to_at_the_other(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness) as (a, b):
        target = person(3, address="北海道稚内市宗谷岬9-9")
        await a.receive(target, institution=X)
        await settle(a, b)
        (first,) = published(RECORD_LINKED, a, b)
        await b.receive(person(4), institution=Y)  # B's index now holds A's record
        await settle(a, b)

        async def at_b() -> int:
            return len(b.ctx.replica.index)

        await eventually(at_b, until=lambda n: n == 2)
        # at A: the person opts out of institution X with deletion (their only record)
        subject = {**target, "family_name": None, "given_name": None}
        await a.optout(
            subject,
            optout_id="opt-x",
            action="stop_and_delete",
            scope="institution",
            institution=X,
        )
        await settle(a, b)
        (applied,) = published(LINKAGE_OPTOUT_APPLIED, a, b)
        assert applied.data.purged == {"persons": 1, "vault_records": 1}
        await eventually(at_b, until=lambda n: n == 1)  # B's keep-up loop, while B is idle
        # nothing of the purged identity stays in B's memory
        assert not any(
            "稚内" in v for vocab in b.ctx.replica.index._cols.vocabs.values() for v in vocab.values
        )
        # the same person at another institution (outside the opt-out's scope) at B: the
        # deleted record is no candidate, so a new person
        await b.receive({**target, "institution_patient_id": "Y-3"}, institution=Y)
        await settle(a, b)
        again = [
            e
            for e in published(RECORD_LINKED, a, b)
            if e.data.submission_id != first.data.submission_id
            and e.data.demographics.birth_date == first.data.demographics.birth_date
        ]
        assert len(again) == 1
        assert again[0].data.person != first.data.person
        stats = await b.stats()
        assert (stats["records"], stats["links"]) == (2, 0)


async def test_a_rolled_back_batch_leaves_no_trace_in_memory(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness, n=1) as (a,):
        await a.receive(person(1), institution=X)
        await caught_up(a)
        index = a.ctx.replica.index
        before = (len(index), index.rows())
        assert before[0] == 1

        class Failed(Exception):
            pass

        async def link_then_fail() -> None:
            async with a.svc.runtime.transaction() as tx:
                await link_records(a.ctx, tx, [a.record(person(2), institution=X)])
                raise Failed

        with pytest.raises(Failed):
            await link_then_fail()
        assert index._cols.n > index.positions  # it was staged, for scoring
        await caught_up(a)  # the next vault transaction finds no trace of it and forgets it
        assert (len(index), index.rows()) == before
        assert index._cols.n == index.positions
        # person 2 arriving again is new; person 1 at another institution still links
        await a.receive(person(2), institution=X)
        await a.receive(person(1, institution_patient_id="Y-1"), institution=Y)
        events = published(RECORD_LINKED, a)
        assert [e.data.person == events[0].data.person for e in events] == [True, False, True]
        await caught_up(a)
        assert len(index) == 3


async def test_a_restart_rebuilds_the_same_index(
    tmp_path: Path, postgres_cluster: Any, harness: type[Linked]
) -> None:
    url = _database(postgres_cluster)
    async with replicas(tmp_path, url, harness) as (a, b):
        await a.send_together(*(a.record(person(i), institution=X) for i in range(6)))
        await settle(a, b)
        await b.send_together(
            *(
                b.record(person(i, institution_patient_id=f"Y-{i}"), institution=Y)
                for i in range(3, 9)
            )
        )
        await settle(a, b)
        # a replaced identity (the same institution patient again, moved) and a purge
        await a.receive(
            person(0, postal_code="530-0001", address="大阪府大阪市北区1-1"), institution=X
        )
        await settle(a, b)
        await b.optout(person(8), optout_id="opt-8", action="stop_and_delete")
        await settle(a, b)
        assert len(published(LINKAGE_OPTOUT_APPLIED, a, b)) == 1
        await caught_up(a, b)
        rows_a, rows_b = a.ctx.replica.index.rows(), b.ctx.replica.index.rows()
        assert rows_a == rows_b
        assert len(rows_a) == 11  # 12 records, person 8's one purged
    async with replicas(tmp_path, url, harness, n=1) as (c,):
        assert c.ctx.replica.index.rows() == rows_a
