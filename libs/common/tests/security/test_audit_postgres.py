"""The append-only triggers on a real PostgreSQL (the harness starts one; `-m "not postgres"`
skips this file)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Executable, MetaData, delete, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from kiban_common.security import (
    AUDIT_ANCHORS_TABLE,
    AuditLog,
    AuditRecord,
    append_only_ddl,
    audit_table,
    chained_log_ddl,
    verify_audit_log,
)


async def test_append_only_on_postgresql(postgres_url: str) -> None:
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url)
    try:
        metadata = MetaData()
        table = audit_table(metadata)
        async with engine.begin() as connection:
            await connection.run_sync(metadata.create_all)
            for _ in range(2):  # idempotent
                for statement in append_only_ddl(table.name, connection.dialect.name):
                    await connection.execute(text(statement))
                columns = [c.name for c in table.columns]
                for statement in chained_log_ddl(table.name, columns, connection.dialect.name):
                    await connection.execute(text(statement))
            record = AuditRecord(
                at=datetime.now(UTC),
                principal="operator:o-1",
                method="GET",
                route="/v1/x",
                status=200,
                source="127.0.0.1",
                request_id="r1",
                trace_id=None,
                duration_ms=1.5,
            )
            log = AuditLog(table, metadata.tables[AUDIT_ANCHORS_TABLE])
            await log.append(connection, [record.as_row(), record.as_row()])
        # a pending entry's own columns are frozen too; only the chainer's one update passes
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as connection:
                await connection.execute(update(table).values(status=500))
        async with engine.begin() as connection:
            assert await log.chain_pending(connection) == 2
        changes: list[Executable] = [
            update(table).values(status=500),
            update(table).values(seq=table.c.seq + 10),
            delete(table),
            text(f"TRUNCATE {table.name}"),
        ]
        for change in changes:
            with pytest.raises(DBAPIError, match="append-only"):
                async with engine.begin() as connection:
                    await connection.execute(change)
        async with engine.connect() as connection:
            first, second = (await connection.execute(select(table).order_by(table.c.seq))).all()
            report = await verify_audit_log(connection, table, metadata.tables[AUDIT_ANCHORS_TABLE])
        assert first.at.tzinfo is not None
        assert first.principal == "operator:o-1"
        assert second.prev_hash == first.hash
        assert report.ok
        assert report.entries == 2
    finally:
        await engine.dispose()
