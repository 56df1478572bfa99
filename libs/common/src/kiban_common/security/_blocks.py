"""The block list: principals the access monitor stopped, shared by every replica through the
service's database. A block is active until an operator lifts it with a reason."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, MetaData, String, Table

BLOCKS_TABLE = "kiban_blocks"
_BigId = BigInteger().with_variant(Integer, "sqlite")


def blocks_table(metadata: MetaData) -> Table:
    table = Table(
        BLOCKS_TABLE,
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("principal", String(256), nullable=False),
        Column("rule", String(32), nullable=False),
        Column("source", String(64), nullable=True),
        Column("blocked_at", DateTime(timezone=True), nullable=False),
        Column("lifted_at", DateTime(timezone=True), nullable=True),
        Column("lifted_by", String(256), nullable=True),
        Column("lift_reason", String(500), nullable=True),
    )
    Index(f"ix_{BLOCKS_TABLE}_principal", table.c.principal, table.c.lifted_at)
    return table
