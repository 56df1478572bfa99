from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import MetaData, Table, delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import Message

from kiban_common.security import (
    AUDIT_ANCHORS_TABLE,
    AUDIT_TABLE,
    AuditLog,
    AuditMiddleware,
    DevIssuer,
    TokenVerifier,
    ZoneGuard,
    append_only_ddl,
    audit_table,
    chained_log_ddl,
)

from .app import build

CANARY = "山田太郎-CANARY"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def table(engine: AsyncEngine) -> Table:
    metadata = MetaData()
    table = audit_table(metadata)
    async with engine.begin() as connection:
        await connection.run_sync(metadata.create_all)
        for statement in append_only_ddl(table.name, connection.dialect.name):
            await connection.execute(text(statement))
        columns = [c.name for c in table.columns]
        for statement in chained_log_ddl(table.name, columns, connection.dialect.name):
            await connection.execute(text(statement))
    return table


def log_of(table: Table) -> AuditLog:
    assert table.metadata is not None
    return AuditLog(table, table.metadata.tables[AUDIT_ANCHORS_TABLE])


def audited_app(verifier: TokenVerifier, engine: AsyncEngine, table: Table) -> FastAPI:
    app = build(verifier)
    # sqlmodel sessions, as the service runtime makes them
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    app.add_middleware(
        AuditMiddleware, sessions=sessions, log=log_of(table), exempt_paths=("/healthz",)
    )
    app.add_middleware(ZoneGuard, zone="core", allowed_networks=["127.0.0.0/8"])
    return app


async def rows(engine: AsyncEngine, table: Table) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        result = await connection.execute(select(table).order_by(table.c.id))
        return [dict(row._mapping) for row in result]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_one_row_per_request(
    engine: AsyncEngine, table: Table, verifier: TokenVerifier, issuer: DevIssuer
) -> None:
    app = audited_app(verifier, engine, table)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    token = issuer.mint("patient:p-1", ["optout:read", "optout:write"], {"name": CANARY})
    async with httpx.AsyncClient(transport=transport, base_url="http://core") as http:
        ok = await http.get("/v1/optouts/o-123", params={"name": CANARY}, headers=bearer(token))
        assert ok.status_code == 200
        assert (await http.get("/v1/optouts/o-123")).status_code == 401
        invalid = await http.post(
            "/v1/optouts", json={"subject": {"name": CANARY}}, headers=bearer(token)
        )
        assert invalid.status_code == 422
        assert (await http.get("/v1/nowhere/x")).status_code == 404
        assert (await http.get("/v1/boom")).status_code == 500
        assert (await http.get("/healthz")).status_code == 200  # exempt

    recorded = await rows(engine, table)
    assert [(r["method"], r["route"], r["status"], r["principal"]) for r in recorded] == [
        ("GET", "/v1/optouts/{optout_id}", 200, "patient:p-1"),
        ("GET", "/v1/optouts/{optout_id}", 401, None),
        ("POST", "/v1/optouts", 422, "patient:p-1"),
        ("GET", "/v1/nowhere/x", 404, None),
        ("GET", "/v1/boom", 500, None),
    ]
    for row in recorded:
        assert row["source"] == "127.0.0.1"
        assert row["at"] is not None
        assert row["duration_ms"] >= 0
        assert len(row["request_id"]) == 32
        assert row["trace_id"] is None
        assert CANARY not in repr(row)
        assert "?" not in row["route"]
    assert ok.headers["x-request-id"] == recorded[0]["request_id"]
    assert len({r["request_id"] for r in recorded}) == len(recorded)


async def test_request_and_trace_ids(
    engine: AsyncEngine, table: Table, verifier: TokenVerifier
) -> None:
    app = audited_app(verifier, engine, table)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://core"
    ) as http:
        supplied = await http.get(
            "/v1/me",
            headers={"X-Request-ID": "req-42", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
        assert supplied.headers["x-request-id"] == "req-42"
        junk_id = "CANARY " + "x" * 70
        junk = await http.get("/v1/me", headers={"X-Request-ID": junk_id})
        assert junk.headers["x-request-id"] != junk_id
    first, second = await rows(engine, table)
    assert (first["request_id"], first["trace_id"]) == ("req-42", trace_id)
    assert second["request_id"] == junk.headers["x-request-id"]
    assert "CANARY" not in repr(second)


async def test_zone_denied_requests_never_reach_the_log(
    engine: AsyncEngine, table: Table, verifier: TokenVerifier
) -> None:
    app = audited_app(verifier, engine, table)
    transport = httpx.ASGITransport(app=app, client=("10.9.9.9", 5))
    async with httpx.AsyncClient(transport=transport, base_url="http://core") as http:
        assert (await http.get("/v1/me")).status_code == 403
    assert await rows(engine, table) == []


async def test_append_only_on_sqlite(
    engine: AsyncEngine, table: Table, verifier: TokenVerifier
) -> None:
    app = audited_app(verifier, engine, table)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://core"
    ) as http:
        await http.get("/v1/me")
    (row,) = await rows(engine, table)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(update(table).values(status=200))
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(delete(table))
    assert await rows(engine, table) == [row]


async def test_failed_write_is_logged_not_raised(
    tmp_path: Path, verifier: TokenVerifier, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        table = audit_table(MetaData())  # never created
        app = audited_app(verifier, engine, table)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://core"
        ) as http:
            with caplog.at_level(logging.WARNING, logger="kiban_common.security"):
                assert (await http.get("/v1/me")).status_code == 401
                assert (await http.get("/v1/me")).status_code == 401
    finally:
        await engine.dispose()
    warnings = [r.getMessage() for r in caplog.records if "audit row not written" in r.message]
    assert warnings == [
        "audit row not written (OperationalError; 1 failed so far)",
        "audit row not written (OperationalError; 2 failed so far)",
    ]


def test_table_shape() -> None:
    table = audit_table(MetaData())
    assert table.name == AUDIT_TABLE == "kiban_audit_log"
    assert [c.name for c in table.columns] == [
        "id",
        "seq",
        "at",
        "kind",
        "principal",
        "method",
        "route",
        "status",
        "source",
        "request_id",
        "trace_id",
        "duration_ms",
        "action",
        "refs",
        "count",
        "purpose",
        "prev_hash",
        "hash",
    ]
    assert table.c.at.type.timezone is True  # type: ignore[attr-defined]
    assert table.c.principal.nullable


def test_append_only_ddl() -> None:
    pg = append_only_ddl("kiban_audit_log", "postgresql")
    joined = "\n".join(pg)
    assert "CREATE OR REPLACE FUNCTION" in joined
    assert "BEFORE UPDATE OR DELETE ON kiban_audit_log" in joined
    assert "BEFORE TRUNCATE ON kiban_audit_log" in joined
    assert "RAISE EXCEPTION" in joined
    sqlite = append_only_ddl("kiban_audit_log", "sqlite")
    assert sum("RAISE(ABORT" in s for s in sqlite) == 2
    with pytest.raises(ValueError, match="identifier"):
        append_only_ddl("audit; DROP TABLE x", "sqlite")
    with pytest.raises(ValueError, match="dialect"):
        append_only_ddl("kiban_audit_log", "mysql")


async def test_ddl_is_idempotent(engine: AsyncEngine, table: Table) -> None:
    async with engine.begin() as connection:
        for statement in append_only_ddl(table.name, "sqlite"):
            await connection.execute(text(statement))


async def raw_call(middleware: AuditMiddleware, path: str = "/v1/x") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [],
        "client": ("127.0.0.1", 9),
        "query_string": b"",
    }
    await middleware(scope, receive, send)
    return sent


async def test_client_gone_is_recorded_as_499(engine: AsyncEngine, table: Table) -> None:
    import asyncio

    async def hangs_up(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    sessions = async_sessionmaker(engine, class_=AsyncSession)
    middleware = AuditMiddleware(hangs_up, sessions=sessions, log=log_of(table))
    with pytest.raises(asyncio.CancelledError):
        await raw_call(middleware)
    await middleware.drain()
    (row,) = await rows(engine, table)
    assert (row["status"], row["route"]) == (499, "/v1/x")


async def test_error_after_response_started(engine: AsyncEngine, table: Table) -> None:
    async def half_sent(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("stream broke")

    sessions = async_sessionmaker(engine, class_=AsyncSession)
    middleware = AuditMiddleware(half_sent, sessions=sessions, log=log_of(table))
    with pytest.raises(RuntimeError):
        await raw_call(middleware)
    (row,) = await rows(engine, table)
    assert row["status"] == 500


async def test_trace_id_from_the_active_span(engine: AsyncEngine, table: Table) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204})  # headers are optional
        await send({"type": "http.response.body", "body": b""})

    sessions = async_sessionmaker(engine, class_=AsyncSession)
    middleware = AuditMiddleware(ok, sessions=sessions, log=log_of(table))
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("request") as span:
        sent = await raw_call(middleware)
        expected = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    (row,) = await rows(engine, table)
    assert (row["status"], row["trace_id"]) == (204, expected)
    assert (b"x-request-id", row["request_id"].encode()) in sent[0]["headers"]


async def test_concurrent_requests_share_one_commit_and_the_chain_holds(
    engine: AsyncEngine, table: Table
) -> None:
    import asyncio

    from kiban_common.security import verify_audit_log

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    log = log_of(table)
    batches: list[int] = []
    append = log.append

    async def counting(connection: Any, entries: list[dict[str, Any]]) -> None:
        batches.append(len(entries))
        await append(connection, entries)

    log.append = counting  # type: ignore[method-assign]
    sessions = async_sessionmaker(engine, class_=AsyncSession)
    middleware = AuditMiddleware(ok, sessions=sessions, log=log)
    await asyncio.gather(*(raw_call(middleware, f"/v1/x{n}") for n in range(40)))
    # every call returned only once its row was committed, and rows were written in batches
    assert len(await rows(engine, table)) == 40
    assert sum(batches) == 40
    assert len(batches) < 40
    async with engine.connect() as connection:
        report = await verify_audit_log(connection, table, log.anchors)
    assert (report.ok, report.entries, report.pending) == (True, 0, 40)  # not linked yet
    assert await log.chain_all(sessions) == 40
    async with engine.connect() as connection:
        report = await verify_audit_log(connection, table, log.anchors)
    assert (report.ok, report.entries, report.pending) == (True, 40, 0)


async def test_a_failed_batch_is_counted_for_every_request_in_it(
    engine: AsyncEngine, table: Table, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    async def ok(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    log = log_of(table)

    async def broken(connection: Any, entries: list[dict[str, Any]]) -> None:
        raise RuntimeError("disk full")

    log.append = broken  # type: ignore[method-assign]
    middleware = AuditMiddleware(
        ok, sessions=async_sessionmaker(engine, class_=AsyncSession), log=log
    )
    with caplog.at_level(logging.WARNING):
        await asyncio.gather(*(raw_call(middleware) for _ in range(5)))
    assert middleware.failed_writes == 5
    assert "audit row not written (RuntimeError" in caplog.text


def test_an_unmatched_path_keeps_plain_words_and_masks_what_may_be_data() -> None:
    from kiban_common.security._routes import masked_path

    assert masked_path("/wp-admin/setup.php") == "/wp-admin/setup.php"
    assert masked_path("/v1/nowhere/x") == "/v1/nowhere/x"
    assert masked_path("/v1/nowhere/山田/1937-02-28") == "/v1/nowhere/*/*"
    assert masked_path("/v1/patients/13123456/records") == "/v1/patients/*/records"
    assert len(masked_path("/a" * 1000)) <= 200
