"""The shared tables as a migration step, so every service's first revision creates them from
the same definitions the code uses (one source of truth, no copied column lists)."""

from __future__ import annotations

from sqlalchemy import Connection, MetaData, text

from kiban_common.db._tables import outbox_table, processed_table
from kiban_common.security import (
    AUDIT_ANCHORS_TABLE,
    AUDIT_TABLE,
    append_only_ddl,
    audit_table,
    blocks_table,
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
