"""`kiban incident report`: who, which records, when, from where, what was blocked and lifted,
from a real service database's audit log and block list."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kiban_cli.main import main
from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_testing import embedded_settings, running_service

INTAKE = SERVICES["intake"]


async def _history(state: Path) -> Path:
    settings = embedded_settings(INTAKE.settings, state)
    async with running_service(INTAKE.create_app, settings, broker=MemoryBroker()) as svc:
        ops = svc.auth("operator:o-7", ["admin"])
        assert (await svc.client.get("/v1/institutions", headers=ops)).status_code == 200
        # A researcher has no business in the core zone: blocked on the first call.
        intruder = svc.auth("researcher:r-9", ["review:apply"])
        assert (await svc.client.get("/v1/institutions", headers=intruder)).status_code == 403
        lifted = await svc.client.post(
            "/v1/security/blocks/researcher:r-9/lift",
            json={"reason": "mistaken configuration, confirmed by phone"},
            headers=ops,
        )
        assert lifted.status_code == 200
        assert (await svc.client.get("/v1/institutions")).status_code == 401
        async with svc.runtime.transaction() as tx:
            tx.audit(
                "purge_patient",
                refs=["p-1", "p-2"],
                purpose="optout:o-123",
                principal="operator:o-7",
                source="10.0.0.5",
            )
    return state / "intake.db"


def _report(database: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    code = main(
        [
            "incident",
            "report",
            "--since",
            since,
            "--database-url",
            f"intake=sqlite:///{database}",
            *extra,
        ]
    )
    return code, capsys.readouterr().out


def test_report_names_principals_records_sources_blocks_and_lifts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = asyncio.run(_history(tmp_path))
    code, out = _report(database, capsys, "--json")
    assert code == 0
    intake = json.loads(out)["services"]["intake"]
    assert intake["audit_chain"]["intact"] is True
    principals = intake["principals"]
    assert principals["operator:o-7"]["requests"] == 2
    assert principals["operator:o-7"]["sources"] == {"127.0.0.1": 2}
    assert principals["researcher:r-9"]["refused"] == {"403": 1}
    assert principals["(no valid token)"]["refused"] == {"401": 1}
    actions = [op["action"] for op in intake["data_operations"]]
    assert actions == ["block", "lift_block", "purge_patient"]
    purge = intake["data_operations"][-1]
    assert purge["refs"] == ["p-1", "p-2"]
    assert purge["count"] == 2
    assert purge["purpose"] == "optout:o-123"
    assert purge["source"] == "10.0.0.5"
    (block,) = intake["blocks"]
    assert block["principal"] == "researcher:r-9"
    assert block["rule"] == "zone"
    assert block["lifted_by"] == "operator:o-7"
    assert block["lift_reason"] == "mistaken configuration, confirmed by phone"


def test_text_report_and_a_window_that_excludes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = asyncio.run(_history(tmp_path))
    code, out = _report(database, capsys)
    assert code == 0
    assert "audit chain intact" in out
    assert "researcher:r-9 rule zone" in out
    assert "purge_patient by operator:o-7 from 10.0.0.5: 2 [p-1, p-2]" in out
    code = main(
        [
            "incident",
            "report",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-02",
            "--database-url",
            f"intake=sqlite:///{database}",
            "--json",
        ]
    )
    empty = json.loads(capsys.readouterr().out)["services"]["intake"]
    assert code == 0
    assert empty["principals"] == {}
    assert empty["data_operations"] == []
    assert empty["blocks"] == []


def test_a_tampered_log_makes_the_report_say_so_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    database = asyncio.run(_history(tmp_path))
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TRIGGER IF EXISTS kiban_audit_log_no_delete")
        connection.execute("DELETE FROM kiban_audit_log WHERE seq = 2")
    code, out = _report(database, capsys)
    assert code == 1
    assert "BROKEN at entry" in out


def test_without_databases_the_command_says_what_to_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["incident", "report", "--since", "2026-01-01"]) == 2
    assert "--database-url" in capsys.readouterr().err
