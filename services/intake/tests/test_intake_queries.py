"""The admission read (`store.queries.admission_facts`) on both databases.

On PostgreSQL it is one prebuilt statement with array parameters (`= ANY(...)`), on SQLite a
statement with IN-lists in chunks: both must return the same facts, since the rules (notice,
opt-out blocks by key or by identity digest, scoped to the institution or to all, opted-out
flags, the institution's status) are decided from them."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from kiban_common.db import create_engine, migrate
from kiban_intake.store import queries as q
from kiban_intake.store.tables import metadata

NOW = datetime(2025, 4, 1, tzinfo=UTC)
HERE, OTHER = "1311111111", "1322222222"


def _rows() -> dict[str, list[dict[str, Any]]]:
    def patient(key: str, opted_out: bool) -> dict[str, Any]:
        return {
            "patient_key": key, "institution_code": HERE, "identity": None,
            "renewal_watch": False, "opted_out": opted_out, "optout_id": None,
            "first_seen_at": NOW, "updated_at": NOW,
        }  # fmt: skip

    def block(optout: str, digest: str, institution: str | None) -> dict[str, Any]:
        return {
            "optout_id": optout, "institution_code": institution, "digest": digest,
            "created_at": NOW,
        }  # fmt: skip

    def notice(key: str, day: date, guardian: bool) -> dict[str, Any]:
        return {
            "institution_code": HERE, "patient_key": key, "notified_on": day,
            "method": "written", "guardian_notified": guardian, "recorded_at": NOW,
        }  # fmt: skip

    return {
        q.institutions.name: [
            {
                "code": HERE,
                "name": "h",
                "kind": "hospital",
                "status": "active",
                "registered_at": NOW,
                "suspended_at": None,
            },
            {
                "code": OTHER,
                "name": "o",
                "kind": "clinic",
                "status": "suspended",
                "registered_at": NOW,
                "suspended_at": NOW,
            },
        ],
        q.notices.name: [
            notice("k1", date(2025, 1, 1), False),
            notice("k1", date(2025, 2, 1), True),
            notice("k2", date(2025, 3, 1), False),
            notice("k9", date(2025, 3, 1), False),  # not asked for
        ],
        q.patients.name: [patient("k1", False), patient("k2", True), patient("k9", True)],
        q.identity_keys.name: [
            {"patient_key": "k1", "digest": "d1", "institution_code": HERE},
            {"patient_key": "k1", "digest": "d2", "institution_code": HERE},
            {"patient_key": "k9", "digest": "d9", "institution_code": HERE},
        ],
        q.blocks.name: [
            block("o1", "d1", None),  # everywhere
            block("o2", "k3", HERE),  # this institution, by patient key
            block("o3", "d4", OTHER),  # another institution only
            block("o4", "d5", HERE),
        ],
    }


@pytest.fixture(params=["sqlite", "postgresql"])
async def conn(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'facts.db'}"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"intake_facts_{secrets.token_hex(4)}")
    engine = create_engine(url)
    try:
        await migrate(engine, "kiban_intake.store:migrations")
        async with engine.begin() as connection:
            for table, rows in _rows().items():
                await connection.execute(insert(metadata.tables[table]), rows)
            yield connection
    finally:
        await engine.dispose()


async def test_admission_facts_are_the_same_on_sqlite_and_postgresql(conn: Any) -> None:
    facts = await q.admission_facts(
        conn, HERE, ["k1", "k2", "k3", "k1"], ["d1", "d4", "d5", "d6"], institution=True
    )
    assert facts.institution_status == "active"
    assert {k: sorted(n.notified_on for n in v) for k, v in facts.notices.items()} == {
        "k1": [date(2025, 1, 1), date(2025, 2, 1)],
        "k2": [date(2025, 3, 1)],
    }
    assert {n.guardian_notified for n in facts.notices["k1"]} == {False, True}
    assert facts.opted_out == {"k2"}
    assert {k: v for k, v in facts.identity_keys.items() if v} == {"k1": {"d1", "d2"}}
    # global and this institution's blocks, by digest and by patient key; not OTHER's
    assert facts.blocked == {"d1", "k3", "d5"}

    elsewhere = await q.admission_facts(conn, OTHER, ["k3"], ["d4", "d5"], institution=True)
    assert elsewhere.institution_status == "suspended"
    assert elsewhere.blocked == {"d4"}

    unknown = await q.admission_facts(conn, "1399999999", [], [], institution=True)
    assert unknown.institution_status is None
    assert not unknown.blocked
    assert not unknown.notices

    nothing = await q.admission_facts(conn, HERE, [], [])
    assert nothing.institution_status is None
    assert not nothing.blocked


async def test_admission_facts_read_batches_larger_than_one_in_list_chunk(conn: Any) -> None:
    keys = [f"x{i}" for i in range(1200)] + ["k2"]
    digests = [f"y{i}" for i in range(1500)] + ["d5"]
    facts = await q.admission_facts(conn, HERE, keys, digests)
    assert facts.opted_out == {"k2"}
    assert facts.blocked == {"d5"}
    assert set(facts.notices) == {"k2"}
