"""`kiban audit verify`: the audit chain of a real service database, intact and tampered with.

Tampering goes around the append-only triggers the way an insider with database access would
(dropping them first); the chain must still give it away and name the first bad entry."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kiban_cli.main import main
from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_testing import embedded_settings, running_service

INTAKE = SERVICES["intake"]


async def _service_with_history(state: Path, calls: int) -> Path:
    settings = embedded_settings(INTAKE.settings, state)
    async with running_service(INTAKE.create_app, settings, broker=MemoryBroker()) as svc:
        for i in range(calls):
            await svc.client.get(f"/v1/nothing-{i}")
        async with svc.runtime.transaction() as tx:
            tx.audit("read_records", refs=["r-1", "r-2"], purpose="app-1", principal="operator:o")
    return state / "intake.db"


def _verify(database: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["audit", "verify", "intake", "--database-url", f"sqlite:///{database}"])
    return code, capsys.readouterr().out


def _tamper(database: Path, statement: str) -> None:
    with sqlite3.connect(database) as connection:
        for trigger in ("kiban_audit_log_no_update", "kiban_audit_log_no_delete"):
            connection.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        connection.execute(statement)


def test_intact_chain_verifies_with_request_and_data_entries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=5))
    code, out = _verify(database, capsys)
    assert code == 0
    assert "intact, 6 entries" in out


def test_an_altered_entry_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=5))
    _tamper(database, "UPDATE kiban_audit_log SET status = 200 WHERE seq = 3")
    code, out = _verify(database, capsys)
    assert code == 1
    assert "BROKEN at entry 3" in out
    assert "altered" in out


def test_a_deleted_entry_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=5))
    _tamper(database, "DELETE FROM kiban_audit_log WHERE seq = 2")
    code, out = _verify(database, capsys)
    assert code == 1
    assert "BROKEN at entry 2" in out


def test_reordered_entries_are_detected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=5))
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER kiban_audit_log_no_update")
        connection.execute("UPDATE kiban_audit_log SET seq = -1 WHERE seq = 2")
        connection.execute("UPDATE kiban_audit_log SET seq = 2 WHERE seq = 4")
        connection.execute("UPDATE kiban_audit_log SET seq = 4 WHERE seq = -1")
    code, out = _verify(database, capsys)
    assert code == 1
    assert "BROKEN at entry 2" in out


def test_a_truncated_tail_is_caught_by_the_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=101))
    _tamper(database, "DELETE FROM kiban_audit_log WHERE seq >= 100")
    code, out = _verify(database, capsys)
    assert code == 1
    assert "ends before anchored entry 100" in out


def test_the_audit_log_refuses_updates_through_the_database(tmp_path: Path) -> None:
    database = asyncio.run(_service_with_history(tmp_path, calls=1))
    with sqlite3.connect(database) as connection, pytest.raises(sqlite3.DatabaseError):
        connection.execute("UPDATE kiban_audit_log SET status = 1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nonsense", "not a database URL"),
        ("sqlite:////nonexistent/dir/intake.db", "no intake database"),
    ],
)
def test_a_bad_database_url_is_a_clear_error_and_creates_nothing(
    url: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["audit", "verify", "intake", "--database-url", url])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not Path("/nonexistent/dir").exists()


def test_an_unmigrated_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "empty.db"
    sqlite3.connect(database).close()
    code = main(["audit", "verify", "intake", "--database-url", f"sqlite:///{database}"])
    assert code == 2
    assert "kiban migrate intake" in capsys.readouterr().err
