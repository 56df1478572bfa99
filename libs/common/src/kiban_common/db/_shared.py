"""The shared tables as a migration step, so every service's first revision creates them from
the same definitions the code uses (one source of truth, no copied column lists)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, MetaData, inspect, text

from kiban_common.db._tables import outbox_table, processed_table
from kiban_common.security import (
    AUDIT_ANCHORS_TABLE,
    AUDIT_TABLE,
    append_only_ddl,
    audit_table,
    blocks_table,
    chained_log_ddl,
)


def shared_tables(metadata: MetaData) -> None:
    """Add the outbox, processed-event and audit tables to a service's metadata."""
    outbox_table(metadata)
    processed_table(metadata)
    audit_table(metadata)
    blocks_table(metadata)


def create_shared_tables(connection: Connection) -> None:
    metadata = MetaData()
    shared_tables(metadata)
    metadata.create_all(connection)
    for table in (AUDIT_TABLE, AUDIT_ANCHORS_TABLE):
        for statement in append_only_ddl(table, connection.dialect.name):
            connection.execute(text(statement))


def drop_shared_tables(connection: Connection) -> None:
    metadata = MetaData()
    shared_tables(metadata)
    metadata.drop_all(connection)


def chain_audit_after_commit(op: Any) -> None:
    """Migration step (revision 0003 of every service): the audit log's `seq`, `prev_hash` and
    `hash` become nullable, filled by the chainer after the entry's transaction commits, and the
    triggers allow exactly that one update. `op` is Alembic's `op`."""
    connection: Connection = op.get_bind()
    columns = {c["name"]: c for c in inspect(connection).get_columns(AUDIT_TABLE)}
    if not columns["seq"]["nullable"]:
        with op.batch_alter_table(AUDIT_TABLE) as batch:
            for name in ("seq", "prev_hash", "hash"):
                batch.alter_column(name, nullable=True, existing_type=columns[name]["type"])
    dialect = connection.dialect.name
    if dialect == "sqlite":  # a table rebuilt by the batch lost its triggers: all again
        for statement in append_only_ddl(AUDIT_TABLE, dialect):
            connection.execute(text(statement))
    for statement in chained_log_ddl(AUDIT_TABLE, list(columns), dialect):
        connection.execute(text(statement))


def unchain_audit_after_commit(op: Any) -> None:
    """Downgrade of `chain_audit_after_commit`: the audit log refuses every update again (its
    columns stay nullable: entries not chained yet must survive the downgrade)."""
    connection: Connection = op.get_bind()
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(
            text(f"DROP TRIGGER IF EXISTS {AUDIT_TABLE}_chain_once ON {AUDIT_TABLE}")
        )
    for statement in append_only_ddl(AUDIT_TABLE, dialect):
        connection.execute(text(statement))
