"""DDL that makes a table append-only in the database itself, so neither a bug nor an
application credential can rewrite history. For migrations (`op.execute` each statement).

Purging rows past their retention period then needs a deliberate migration that drops the
triggers, which is the point.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,50}$")
_PG_FUNCTION = "kiban_reject_change"


def append_only_ddl(table_name: str, dialect: str) -> list[str]:
    """Statements that make `table_name` reject UPDATE and DELETE (and TRUNCATE on
    PostgreSQL). `dialect` is SQLAlchemy's dialect name: `postgresql` or `sqlite`. Idempotent:
    running them again replaces the triggers."""
    if not _IDENTIFIER.fullmatch(table_name):
        raise ValueError("table name must be a plain SQL identifier of at most 51 characters")
    if dialect == "postgresql":
        return _postgresql(table_name)
    if dialect == "sqlite":
        return _sqlite(table_name)
    raise ValueError(f"no append-only DDL for dialect {dialect!r}")


def _postgresql(table: str) -> list[str]:
    function = (
        f"CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "    RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP\n"
        "        USING ERRCODE = 'insufficient_privilege';\n"
        "END\n"
        "$$"
    )
    return [
        function,
        f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {_PG_FUNCTION}()",
    ]


def _sqlite(table: str) -> list[str]:
    statements: list[str] = []
    for operation in ("UPDATE", "DELETE"):
        trigger = f"{table}_no_{operation.lower()}"
        statements.append(f"DROP TRIGGER IF EXISTS {trigger}")
        statements.append(
            f"CREATE TRIGGER {trigger} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
    return statements
