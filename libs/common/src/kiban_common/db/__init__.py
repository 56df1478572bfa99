"""Database engines, the shared tables and migrations (sqlmodel / SQLAlchemy async)."""

from kiban_common.db._engine import async_url, create_engine, is_sqlite, session_factory
from kiban_common.db._migrations import (
    current_revision,
    migrate,
    run_migrations_env,
    schema_drift,
)
from kiban_common.db._shared import (
    chain_audit_after_commit,
    create_shared_tables,
    drop_shared_tables,
    shared_tables,
    unchain_audit_after_commit,
)
from kiban_common.db._tables import OUTBOX, PROCESSED, outbox_table, processed_table

__all__ = [
    "OUTBOX",
    "PROCESSED",
    "async_url",
    "chain_audit_after_commit",
    "create_engine",
    "create_shared_tables",
    "current_revision",
    "drop_shared_tables",
    "is_sqlite",
    "migrate",
    "outbox_table",
    "processed_table",
    "run_migrations_env",
    "schema_drift",
    "session_factory",
    "shared_tables",
    "unchain_audit_after_commit",
]
