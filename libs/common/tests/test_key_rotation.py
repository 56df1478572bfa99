"""Key rotation of stored field tokens (`rotate_keys`, `stale_values`) on SQLite and PostgreSQL:
every value ends up under the new key and still opens, an interrupted run resumes without
re-encrypting anything twice, a row the service rewrites meanwhile keeps its new value, retiring
waits for the last old value (and outbox event), and the audit chain still verifies."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from kiban_common.crypto import (
    ColumnProgress,
    CryptoError,
    EncryptedColumn,
    FieldCipher,
    Keyring,
    rotate_keys,
    stale_values,
)
from kiban_common.db import OUTBOX, create_engine, shared_tables
from kiban_common.security import AUDIT_ANCHORS_TABLE, AUDIT_TABLE, verify_audit_log

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
OLD = FieldCipher(Keyring({"A": KEY_A}, "A"))
ROTATING = FieldCipher(Keyring({"A": KEY_A, "B": KEY_B}, "B"))
ONLY_NEW = FieldCipher(Keyring({"B": KEY_B}, "B"))  # proves a value needs A no more

metadata = MetaData()
shared_tables(metadata)
notes = Table(
    "t_notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("body", Text, nullable=True),
)
# A composite key and a context computed from the row.
cards = Table(
    "t_cards",
    metadata,
    Column("owner", String(16), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("secret", Text, nullable=False),
)
NOTES = EncryptedColumn("t_notes", "body", "test.notes.body")
CARDS = EncryptedColumn(
    "t_cards", "secret", lambda row: f"test.cards/{row['kind']}", row_columns=("kind",)
)
COLUMNS = (NOTES, CARDS)
N_NOTES, N_CARDS = 23, 7


def _card_kind(slot: int) -> str:
    return "gold" if slot % 2 else "blue"


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/rotation.db"
    else:
        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database(f"rotation_{secrets.token_hex(3)}")
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        await connection.execute(
            insert(notes),
            [
                {
                    "id": i,
                    "body": None
                    if i % 10 == 0
                    else OLD.encrypt(f"n{i}", context=NOTES.context_for({})),
                }
                for i in range(1, N_NOTES + 1)
            ],
        )
        await connection.execute(
            insert(cards),
            [
                {
                    "owner": f"o{slot % 3}",
                    "slot": slot,
                    "kind": _card_kind(slot),
                    "secret": OLD.encrypt(f"c{slot}", context=f"test.cards/{_card_kind(slot)}"),
                }
                for slot in range(N_CARDS)
            ],
        )
    yield engine
    await engine.dispose()


async def _values(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as connection:
        found = {
            f"note:{r.id}": r.body
            for r in await connection.execute(select(notes))
            if r.body is not None
        }
        for r in await connection.execute(select(cards)):
            found[f"card:{r.owner}/{r.slot}"] = r.secret
    return found


def _open(ref: str, token: str, cipher: FieldCipher = ONLY_NEW) -> str:
    if ref.startswith("note:"):
        return cipher.decrypt_str(token, context="test.notes.body")
    slot = int(ref.rsplit("/", 1)[1])
    return cipher.decrypt_str(token, context=f"test.cards/{_card_kind(slot)}")


async def _audit_entries(engine: AsyncEngine) -> list[dict[str, Any]]:
    audit = metadata.tables[AUDIT_TABLE]
    async with engine.connect() as connection:
        report = await verify_audit_log(connection, audit, metadata.tables[AUDIT_ANCHORS_TABLE])
        assert report.ok, report
        return [dict(r._mapping) for r in await connection.execute(select(audit))]


async def test_every_value_is_re_encrypted_under_the_new_key_and_still_opens(
    engine: AsyncEngine,
) -> None:
    before = {ref: _open(ref, token, OLD) for ref, token in (await _values(engine)).items()}
    seen: list[tuple[str, int, int]] = []

    report = await rotate_keys(
        engine,
        metadata,
        COLUMNS,
        ROTATING,
        batch_size=5,
        progress=lambda s: seen.append((s.name, s.rotated, s.pending)),
    )

    assert report.ok
    assert report.active_key_id == "B"
    by_name = {c.name: c for c in report.columns}
    non_null_notes = N_NOTES - N_NOTES // 10
    assert by_name["t_notes.body"].rotated == by_name["t_notes.body"].total == non_null_notes
    assert by_name["t_notes.body"].batches == -(-non_null_notes // 5)
    assert by_name["t_cards.secret"].rotated == N_CARDS
    after = await _values(engine)
    assert all(token.startswith("v1.B.") for token in after.values())
    # Every value opens with a keyring that no longer holds A, to the same plaintext.
    assert {ref: _open(ref, token) for ref, token in after.items()} == before
    assert seen[0] == ("t_notes.body", 0, non_null_notes)
    assert seen[-1] == ("t_cards.secret", N_CARDS, N_CARDS)

    # One audit entry per batch, ids only, and the chain still verifies.
    entries = [e for e in await _audit_entries(engine) if e["action"] == "keys.rotate"]
    assert len(entries) == by_name["t_notes.body"].batches + by_name["t_cards.secret"].batches
    assert sum(e["count"] for e in entries) == non_null_notes + N_CARDS
    assert {e["kind"] for e in entries} == {"data"}
    assert entries[0]["purpose"] == "t_notes.body A->B"
    assert json.loads(entries[0]["refs"]) == ["1", "2", "3", "4", "5"]
    card_refs = {r for e in entries[-2:] for r in json.loads(e["refs"])}
    assert "o1/1" in card_refs  # composite keys as `owner/slot`
    assert not any("n1" in json.dumps(e, default=str) for e in entries)

    # Nothing left: a second run re-encrypts nothing and writes no audit entry.
    again = await rotate_keys(engine, metadata, COLUMNS, ROTATING, batch_size=5)
    assert [c.rotated for c in again.columns] == [0, 0]
    assert await _values(engine) == after
    assert len(await _audit_entries(engine)) == len(entries)


async def test_an_interrupted_rotation_resumes_and_re_encrypts_nothing_twice(
    engine: AsyncEngine,
) -> None:
    class Crash(Exception):
        pass

    def crash_after_first_batch(state: ColumnProgress) -> None:
        if state.batches == 1:
            raise Crash

    with pytest.raises(Crash):
        await rotate_keys(
            engine, metadata, COLUMNS, ROTATING, batch_size=5, progress=crash_after_first_batch
        )
    partial = await _values(engine)
    done = {ref: token for ref, token in partial.items() if token.startswith("v1.B.")}
    assert sorted(done) == [f"note:{i}" for i in (1, 2, 3, 4, 5)]

    report = await rotate_keys(engine, metadata, COLUMNS, ROTATING, batch_size=5)

    assert report.ok
    non_null_notes = N_NOTES - N_NOTES // 10
    assert [c.rotated for c in report.columns] == [non_null_notes - 5, N_CARDS]
    final = await _values(engine)
    assert all(token.startswith("v1.B.") for token in final.values())
    assert {ref: final[ref] for ref in done} == done  # the first batch was not redone
    assert all(_open(ref, token) for ref, token in final.items())
    await _audit_entries(engine)  # verifies


async def test_a_row_the_service_rewrites_during_rotation_keeps_its_new_value(
    engine: AsyncEngine,
) -> None:
    context = "test.notes.body"
    raced = False

    async def service_writes(column: EncryptedColumn, rows: list[dict[str, Any]]) -> None:
        nonlocal raced
        if raced or column is not NOTES:
            return
        raced = True
        assert [r["id"] for r in rows[:2]] == [1, 2]
        async with engine.begin() as connection:
            # A replica on the new key rewrites row 1; one still on the old key rewrites row 2.
            await connection.execute(
                update(notes)
                .where(notes.c.id == 1)
                .values(body=ROTATING.encrypt("new-1", context=context))
            )
            await connection.execute(
                update(notes)
                .where(notes.c.id == 2)
                .values(body=OLD.encrypt("new-2", context=context))
            )

    report = await rotate_keys(
        engine, metadata, COLUMNS, ROTATING, batch_size=5, before_write=service_writes
    )

    assert raced
    assert report.ok
    state = report.columns[0]
    assert state.changed_meanwhile == 2
    values = await _values(engine)
    assert _open("note:1", values["note:1"]) == "new-1"
    assert _open("note:2", values["note:2"]) == "new-2"  # caught by the next pass, under B
    assert all(token.startswith("v1.B.") for token in values.values())


async def test_retire_refuses_while_old_values_remain_and_passes_after(
    engine: AsyncEngine,
) -> None:
    outbox = metadata.tables[OUTBOX]
    event = {"data": {"identity": OLD.encrypt("x", context="kiban.test/identity")}}
    async with engine.begin() as connection:
        await connection.execute(
            insert(outbox).values(
                event_id="e-1",
                type="kiban.test.v1",
                key=b"k",
                value=json.dumps(event).encode(),
                headers=[],
                created_at=datetime.now(UTC),
            )
        )

    stale = await stale_values(engine, metadata, COLUMNS, "B")
    assert not stale.clean
    assert stale.columns == {
        "t_notes.body": {"A": N_NOTES - N_NOTES // 10},
        "t_cards.secret": {"A": N_CARDS},
    }
    assert stale.outbox == {"A": 1}

    await rotate_keys(engine, metadata, COLUMNS, ROTATING, batch_size=50)
    stale = await stale_values(engine, metadata, COLUMNS, "B")
    assert stale.columns == {}
    assert stale.outbox == {"A": 1}

    async with engine.begin() as connection:
        await connection.execute(outbox.delete())  # the relay published it
    assert (await stale_values(engine, metadata, COLUMNS, "B")).clean


async def test_a_value_under_a_key_the_keyring_lacks_is_reported_not_rotated(
    engine: AsyncEngine,
) -> None:
    stranger = FieldCipher(Keyring({"Z": bytes(32)}, "Z"))
    async with engine.begin() as connection:
        await connection.execute(
            update(notes)
            .where(notes.c.id == 3)
            .values(body=stranger.encrypt("n3", context="test.notes.body"))
        )

    report = await rotate_keys(engine, metadata, COLUMNS, ROTATING, batch_size=5)

    assert not report.ok
    assert report.columns[0].unreadable == 1
    assert report.columns[0].remaining == 1
    stale = await stale_values(engine, metadata, COLUMNS, "B")
    assert stale.columns == {"t_notes.body": {"Z": 1}}


async def test_a_declaration_naming_no_real_column_is_refused(engine: AsyncEngine) -> None:
    with pytest.raises(CryptoError, match=r"t_notes\.nope"):
        await rotate_keys(engine, metadata, [EncryptedColumn("t_notes", "nope", "c")], ROTATING)
