"""`kiban keys rotate` / `kiban keys retire` on real service databases.

The services are driven through their real APIs and consumers (the demo's own scenario steps:
institutions, notices, JP Core bundles, linkage, an opt-out with deletion), so their tables hold
what production would. Before rotating, a scan of every column of every table for a token
under the old key id proves the declared `encrypted_columns` are all of them; after rotating
(while the services run under the new active key) the same scan finds nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import MetaData, select

from kiban_cli import demo, demo_data
from kiban_cli.main import main
from kiban_cli.services import SERVICES
from kiban_common.bus import MemoryBroker
from kiban_common.db import OUTBOX, create_engine
from kiban_common.settings import OutboxSettings
from kiban_testing import RunningService, embedded_settings, eventually, running_service

CORE_RUN = ("intake", "optout", "linkage", "anonymizer")
ROTATED = ("intake", "optout", "linkage")


def _old_token(kid: str) -> re.Pattern[str]:
    # A field token's header and at least a nonce and a tag of body.
    return re.compile(rf"v1\.{re.escape(kid)}\.[A-Za-z0-9_-]{{38,}}")


class _Router(httpx.AsyncBaseTransport):
    """Sends the demo's `http://127.0.0.1:<port>` calls to the in-process app on that port."""

    def __init__(self, running: dict[int, RunningService]) -> None:
        self.transports = {
            port: httpx.ASGITransport(app=svc.app, client=("127.0.0.1", 50000))
            for port, svc in running.items()
        }

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.port or 80].handle_async_request(request)


@asynccontextmanager
async def _platform(state: Path, names: Iterable[str]) -> AsyncIterator[demo.Platform]:
    broker = MemoryBroker()
    async with AsyncExitStack() as stack:
        running: dict[int, RunningService] = {}
        for name in names:
            service = SERVICES[name]
            settings = embedded_settings(
                service.settings, state, outbox=OutboxSettings(poll_interval_ms=50)
            )
            running[service.port] = await stack.enter_async_context(
                running_service(service.create_app, settings, broker=broker)
            )
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=_Router(running), timeout=30)
        )
        yield demo.Platform(client, "127.0.0.1", state)
        for svc in running.values():  # events still in an outbox carry tokens too
            await eventually(lambda svc=svc: _outbox_rows(svc), until=lambda n: n == 0)


async def _outbox_rows(svc: RunningService) -> int:
    async with svc.runtime.engine.connect() as connection:
        table = svc.runtime.definition.metadata.tables[OUTBOX]
        return len((await connection.execute(select(table.c.id))).all())


def _url(state: Path, name: str) -> str:
    return f"sqlite:///{state.resolve()}/{name}.db"


async def _scan(url: str, metadata: MetaData, pattern: re.Pattern[str]) -> dict[str, int]:
    """`table.column` → how many values hold a token matching `pattern`, over every column of
    every table (text, JSON and bytes alike)."""
    found: dict[str, int] = {}
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in await connection.execute(select(table)):
                    for column, value in row._mapping.items():
                        if value is None:
                            continue
                        if isinstance(value, bytes | bytearray | memoryview):
                            text = bytes(value).decode("utf-8", "replace")
                        else:
                            text = (
                                value if isinstance(value, str) else json.dumps(value, default=str)
                            )
                        if pattern.search(text):
                            name = f"{table.name}.{column}"
                            found[name] = found.get(name, 0) + 1
    finally:
        await engine.dispose()
    return found


def _make_new_key_active(keys_file: Path, new: str) -> str:
    material = json.loads(keys_file.read_text())
    old = str(material["active_key_id"])
    material["keys"][new] = base64.b64encode(secrets.token_bytes(32)).decode()
    material["active_key_id"] = new
    keys_file.write_text(json.dumps(material))
    return old


async def _kiban(argv: list[str]) -> int:
    """The command in a thread of its own: it runs its own event loop, as from a shell."""
    return await asyncio.to_thread(main, argv)


def _declared(name: str) -> set[str]:
    return {c.name for c in SERVICES[name].definition.encrypted_columns}


async def test_rotation_leaves_no_old_key_anywhere_in_intake_optout_and_linkage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "kiban"
    monkeypatch.setenv("KIBAN_STATE_DIR", str(state))
    data = demo_data.generate(datetime.now(ZoneInfo("Asia/Tokyo")).date())
    async with _platform(state, CORE_RUN) as platform:
        scenario = demo.Scenario(platform, data)
        await scenario.institutions_and_notices()
        await scenario.bundles()
        await scenario.linked()
        await scenario.opt_out()

    old = json.loads((state / "dev-keys.json").read_text())["active_key_id"]
    pattern = _old_token(old)
    before = {
        name: await _scan(_url(state, name), SERVICES[name].definition.metadata, pattern)
        for name in CORE_RUN
    }
    # Every column that holds a token is declared (an undeclared one would never be rotated),
    # and the scenario filled every declared column but linkage's review queue (no ambiguous
    # opt-out in it; the library tests cover a declared column the same way).
    for name in CORE_RUN:
        assert set(before[name]) <= _declared(name), name
    assert set(before["intake"]) == _declared("intake")
    assert set(before["optout"]) == _declared("optout")
    assert set(before["linkage"]) == _declared("linkage") - {"linkage_optout_reviews.subject"}
    assert before["anonymizer"] == {}

    new = "dev2"
    assert _make_new_key_active(state / "dev-keys.json", new) == old
    capsys.readouterr()
    # Retiring is refused while old values remain, naming the count per column.
    assert await _kiban(["keys", "retire", "intake", "--dev"]) == 1
    out = capsys.readouterr().out
    records = before["intake"]["intake_records.identity"]
    assert f"intake_records.identity: {records} under {old}" in out

    # Rotate while the services run with the new active key (no downtime).
    async with _platform(state, CORE_RUN):
        for name in ROTATED:
            code = await _kiban(["keys", "rotate", name, "--dev", "--batch-size", "7", "--retire"])
            out = capsys.readouterr().out
            assert code == 0, out
            for column, count in before[name].items():
                assert f"{column}: {count}/{count} re-encrypted" in out
            assert f"Key ids {name} no longer needs: {old}." in out
            assert f'keep "active_key_id": "{new}"' in out

    for name in CORE_RUN:
        assert await _scan(_url(state, name), SERVICES[name].definition.metadata, pattern) == {}
        assert await _kiban(["audit", "verify", name, "--dev"]) == 0
    assert await _kiban(["keys", "retire", "linkage", "--dev"]) == 0
    # The data still reads back through the services, now under the new key only.
    material = json.loads((state / "dev-keys.json").read_text())
    del material["keys"][old]
    (state / "dev-keys.json").write_text(json.dumps(material))
    async with _platform(state, ("intake",)) as platform:
        ops = platform.auth(demo.OPERATOR, ["admin"])
        engine = create_engine(_url(state, "intake"))
        async with engine.connect() as connection:
            ids = list(
                (await connection.exec_driver_sql("SELECT id FROM intake_submissions")).scalars()
            )
        await engine.dispose()
        assert len(ids) == len(demo_data.INSTITUTIONS)
        for submission_id in ids:
            got = await platform.call("GET", "intake", f"/v1/submissions/{submission_id}", ops)
            assert got["counts"]["accepted"] > 0


async def test_rotate_on_postgresql_with_keys_from_kiban_crypto_settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    postgres_cluster: Any,
) -> None:
    url = postgres_cluster.create_database(f"optout_keys_{secrets.token_hex(3)}")
    state = tmp_path / "kiban"
    optout = SERVICES["optout"]
    settings = embedded_settings(optout.settings, state, database_url=url)
    async with running_service(optout.create_app, settings, broker=MemoryBroker()) as svc:
        for i in range(5):
            claims = {
                "family_name": "試験",
                "given_name": f"太郎{i}",
                "family_name_kana": "シケン",
                "given_name_kana": "タロウ",
                "birthdate": f"1980-01-0{i + 1}",
                "gender": "male",
            }
            r = await svc.client.post(
                "/v1/optouts",
                json={"action": "stop", "scope": "all"},
                headers=svc.auth(f"patient:pt-{i}", ["optout:self"], claims),
            )
            assert r.status_code == 202, r.text
        await eventually(lambda: _outbox_rows(svc), until=lambda n: n == 0)

    keys_file = tmp_path / "rotated-keys.json"
    keys_file.write_text((state / "dev-keys.json").read_text())
    old = _make_new_key_active(keys_file, "k2")
    monkeypatch.setenv("KIBAN_CRYPTO__KEYS_FILE", str(keys_file))
    capsys.readouterr()

    assert await _kiban(["keys", "retire", "optout", "--database-url", url]) == 1
    assert f"optout_requests.subject: 5 under {old}" in capsys.readouterr().out
    assert (
        await _kiban(["keys", "rotate", "optout", "--database-url", url, "--batch-size", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "optout_requests.subject: 2/5 re-encrypted" in out
    assert "optout_requests.subject: done, 5 re-encrypted in 3 batches" in out
    assert await _kiban(["keys", "retire", "optout", "--database-url", url]) == 0
    assert f"no longer needs: {old}." in capsys.readouterr().out
    assert await _scan(url, optout.definition.metadata, _old_token(old)) == {}
    assert await _kiban(["audit", "verify", "optout", "--database-url", url]) == 0


def test_a_service_without_encrypted_values_has_nothing_to_rotate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "rotate", "review", "--dev"]) == 0
    assert "stores no encrypted values" in capsys.readouterr().out


def test_a_missing_database_or_bad_batch_size_exits_2_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"sqlite:///{tmp_path}/nope.db"
    assert main(["keys", "rotate", "intake", "--database-url", missing]) == 2
    err = capsys.readouterr().err
    assert "no intake database at that SQLite path" in err
    assert "Traceback" not in err
    assert not (tmp_path / "nope.db").exists()
    bad = ["keys", "rotate", "intake", "--database-url", missing, "--batch-size", "0"]
    assert main(bad) == 2
    assert "--batch-size must be between" in capsys.readouterr().err


def test_keys_from_settings_are_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "intake.db"
    database.touch()
    monkeypatch.delenv("KIBAN_CRYPTO__KEYS_FILE", raising=False)
    monkeypatch.delenv("KIBAN_CRYPTO__KEYS", raising=False)
    assert main(["keys", "retire", "intake", "--database-url", f"sqlite:///{database}"]) == 2
    assert "KIBAN_CRYPTO__KEYS" in capsys.readouterr().err
