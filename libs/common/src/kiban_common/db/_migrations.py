"""Versioned schema migrations per service (Alembic), run over the service's async engine.

Each service keeps an Alembic script directory in its `store/migrations` package; its `env.py`
calls `run_migrations_env(metadata)`. `migrate()` applies it: on start in dev, by `kiban migrate`
in production.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine


def _config(script_location: str, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    return config


# Alembic's `context` is a module-global proxy: two migrations interleaving in one event loop
# (six services starting in `kiban dev`) would tear it down under each other.
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def migrate(engine: AsyncEngine, script_location: str, revision: str = "head") -> None:
    """Upgrade the database to `revision`; `script_location` is `package:directory`."""

    def upgrade(connection: Connection) -> None:
        command.upgrade(_config(script_location, connection), revision)

    lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock, engine.begin() as connection:
        await connection.run_sync(upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def schema_drift(engine: AsyncEngine, metadata: MetaData) -> list[Any]:
    """Differences between the migrated database and the tables the code declares (empty when
    the migrations are complete)."""

    def compare(connection: Connection) -> list[Any]:
        ctx = MigrationContext.configure(connection, opts={"compare_type": True})
        return [d for d in compare_metadata(ctx, metadata) if not _is_alembic_table(d)]

    async with engine.connect() as connection:
        return await connection.run_sync(compare)


def _is_alembic_table(diff: Any) -> bool:
    return (
        isinstance(diff, tuple)
        and len(diff) > 1
        and getattr(diff[1], "name", "") == "alembic_version"
    )


def run_migrations_env(metadata: MetaData) -> None:
    """The body of a service's `env.py`: migrate over the connection `migrate()` handed in."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run Kiban migrations with `kiban migrate <service>`, not `alembic`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
