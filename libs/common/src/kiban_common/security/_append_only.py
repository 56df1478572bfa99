"""DDL that makes a table append-only in the database itself, so neither a bug nor an
application credential can rewrite history. For migrations (`op.execute` each statement).

Purging rows past their retention period then needs a deliberate migration that drops the
triggers, which is the point.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

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


# The columns of a chained log the chainer may fill once; every other column is frozen.
_CHAIN_COLUMNS = ("seq", "prev_hash", "hash")


def chained_log_ddl(table_name: str, columns: Sequence[str], dialect: str) -> list[str]:
    """Statements that make a hash-chained log append-only except for one update per row: the
    chainer's, which fills `seq`, `prev_hash` and `hash` of a row that has none and changes
    nothing else. DELETE (and TRUNCATE) stay refused. `columns` are all the table's columns.
    Replaces the triggers of `append_only_ddl` on that table; idempotent."""
    if not _IDENTIFIER.fullmatch(table_name) or not all(_IDENTIFIER.fullmatch(c) for c in columns):
        raise ValueError("table and column names must be plain SQL identifiers")
    frozen = [c for c in columns if c not in _CHAIN_COLUMNS]
    if dialect == "postgresql":
        old = ", ".join(f'OLD."{c}"' for c in frozen)
        new = ", ".join(f'NEW."{c}"' for c in frozen)
        function = f"{table_name}_chain_once"
        return [
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "    IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL\n"
            "       AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL\n"
            f"       AND ROW({new}) IS NOT DISTINCT FROM ROW({old}) THEN\n"
            "        RETURN NEW;\n"
            "    END IF;\n"
            "    RAISE EXCEPTION 'table % is append-only (% refused)', TG_TABLE_NAME, TG_OP\n"
            "        USING ERRCODE = 'insufficient_privilege';\n"
            "END\n"
            "$$",
            f"DROP TRIGGER IF EXISTS {table_name}_append_only ON {table_name}",
            f"DROP TRIGGER IF EXISTS {table_name}_chain_once ON {table_name}",
            f"CREATE TRIGGER {table_name}_chain_once BEFORE UPDATE OR DELETE ON {table_name} "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()",
        ]
    if dialect == "sqlite":
        same = " AND ".join(f'NEW."{c}" IS OLD."{c}"' for c in frozen)
        allowed = (
            "OLD.seq IS NULL AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL "
            f"AND NEW.hash IS NOT NULL AND {same}"
        )
        return [
            f"DROP TRIGGER IF EXISTS {table_name}_no_update",
            f"CREATE TRIGGER {table_name}_no_update BEFORE UPDATE ON {table_name} "
            f"WHEN NOT ({allowed}) "
            f"BEGIN SELECT RAISE(ABORT, '{table_name} is append-only'); END",
        ]
    raise ValueError(f"no append-only DDL for dialect {dialect!r}")
