"""Tables every service has beside its own: the outbox, the processed-event inbox and the audit log.

Each service owns a `MetaData`; these factories add the shared tables to it so that one Alembic
history per service creates everything that service's database holds.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)

OUTBOX = "kiban_outbox"
PROCESSED = "kiban_processed_events"

_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only


def outbox_table(metadata: MetaData) -> Table:
    """Events waiting to be published, in commit order (`id`)."""
    return Table(
        OUTBOX,
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("type", String(128), nullable=False),
        Column("key", LargeBinary, nullable=False),
        Column("value", LargeBinary, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )


def processed_table(metadata: MetaData) -> Table:
    """Event ids a consumer group has applied, written in the transaction of the effect."""
    table = Table(
        PROCESSED,
        metadata,
        Column("consumer_group", String(128), primary_key=True),
        Column("event_id", String(64), primary_key=True),
        Column("type", String(128), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )
    Index(f"ix_{PROCESSED}_processed_at", table.c.processed_at)
    return table
