"""The `kiban` command as a user runs it: a real process, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from kiban_cli.services import SERVICES

PORTS = {
    "intake": 8101,
    "optout": 8102,
    "linkage": 8103,
    "anonymizer": 8104,
    "review": 8105,
    "release": 8106,
}


def _kiban(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiban_cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**_clean_env(), **(env or {})},
        timeout=120,
        check=False,
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KIBAN_")}


def _ports_free() -> bool:
    for port in PORTS.values():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return False
    return True


def test_kiban_dev_answers_readyz_on_all_six_ports_within_20_seconds(tmp_path: Path) -> None:
    if not _ports_free():
        pytest.skip("a port of 8101-8106 is taken on this machine")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "kiban_cli.main", "dev"],
        cwd=tmp_path,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pending = dict(PORTS)
        with httpx.Client(timeout=1) as client:
            while pending and time.monotonic() - started < 20:
                for name, port in list(pending.items()):
                    try:
                        if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.TransportError:
                        pass
                time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert not pending, f"not ready after {elapsed:.1f}s: {sorted(pending)}"
        assert (tmp_path / ".kiban" / "intake.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "six services ready" in output


def test_kiban_token_mints_a_token_the_dev_issuer_verifies(tmp_path: Path) -> None:
    result = _kiban(
        "token",
        "--sub",
        "institution:1312345678",
        "--scope",
        "intake:submit",
        "--claim",
        "organization=Example",
        "--ttl",
        "600",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    import asyncio

    from kiban_common.security import FileKeySource, TokenVerifier

    verifier = TokenVerifier(
        issuer="kiban-dev", key_source=FileKeySource(tmp_path / ".kiban" / "dev-jwks.json")
    )
    principal = asyncio.run(verifier.verify(token))
    assert principal.subject == "institution:1312345678"
    assert principal.has_scope("intake:submit")
    assert principal.claims["organization"] == "Example"


def test_kiban_token_rejects_a_malformed_claim(tmp_path: Path) -> None:
    result = _kiban("token", "--sub", "patient:p1", "--claim", "no-equals-sign", cwd=tmp_path)
    assert result.returncode == 2
    assert "--claim takes K=V" in result.stderr


def test_kiban_serve_without_settings_names_the_missing_variable(tmp_path: Path) -> None:
    result = _kiban("serve", "intake", cwd=tmp_path)
    assert result.returncode == 2
    assert "KIBAN_DATABASE_URL" in result.stderr


def test_kiban_migrate_applies_the_schema_and_reports_the_revision(tmp_path: Path) -> None:
    env = {"KIBAN_DATABASE_URL": f"sqlite:///{tmp_path}/review.db", "KIBAN_BUS": "memory"}
    result = _kiban("migrate", "review", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    config = Config()
    config.set_main_option("script_location", SERVICES["review"].definition.migrations)
    head = ScriptDirectory.from_config(config).get_current_head()
    assert json.loads(result.stdout) == {"service": "review", "revision": head}


def test_kiban_demo_runs_the_whole_scenario_and_every_check_holds(tmp_path: Path) -> None:
    if not _ports_free():
        pytest.skip("a port of 8101-8106 is taken on this machine")
    state = tmp_path / "state"
    stale = state / "demo" / "leftover-from-an-earlier-run.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("stale")
    result = _kiban("demo", "--state", str(state), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "FAILED" not in out
    assert "six services ready" in out
    assert "records linked: 64 records from 2 institutions → 48 persons" in out
    assert "opt-out applied everywhere: intake (matched 2" in out
    assert "linkage (matched 1" in out
    assert "anonymizer (matched 1" in out
    assert "achieved k = " in out
    assert "no identifiers in the files" in out
    assert "none found" in out
    assert "the opted-out person is not in the dataset: cohort 39 persons" in out
    assert "trace: 50 rows of" in out
    assert "recipient researcher:r-demo-001" in out
    assert out.rstrip().endswith("DEMO OK")
    # Everything lives under STATE/demo/, the downloads too.
    downloads = state / "demo" / "downloads"
    assert sorted(p.suffix for p in downloads.iterdir()).count(".csv") >= 2
    assert not (tmp_path / ".kiban").exists()
    assert not stale.exists()  # the demo wiped STATE/demo/ first: every run is the same
    # The demo prints counts and ids, never a synthetic identity.
    from datetime import date

    from kiban_cli import demo_data

    data = demo_data.generate(date.today())
    shown = out + result.stderr
    for person in data.persons:
        assert f"{person.family_name}{person.given_name}" not in shown
        assert person.insurance_number not in shown
        assert person.birth_date.isoformat() not in shown
