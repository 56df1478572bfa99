"""Async engines for PostgreSQL (asyncpg) and SQLite (aiosqlite) from one URL setting."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool
from sqlmodel.ext.asyncio.session import AsyncSession

from kiban_common.telemetry._logging import quiet_parameter_loggers

_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


def async_url(url: str) -> str:
    """`postgresql://...` → `postgresql+asyncpg://...`; explicit drivers are kept."""
    parsed = make_url(url)
    driver = _ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(
    url: str, *, pool_size: int = 20, max_overflow: int = 0, pre_ping: bool = False
) -> AsyncEngine:
    """An engine with the settings Kiban relies on: WAL and a busy timeout on SQLite (one
    process, several tasks writing), a bounded pool on PostgreSQL (pre-ping on request)."""
    url = async_url(url)
    # Drivers log query parameters (personal data) below WARNING: never let them, even when a
    # process turns the root logger to DEBUG without `configure_logging`.
    quiet_parameter_loggers()
    kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        if make_url(url).database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database would vanish between sessions")
        kwargs["poolclass"] = NullPool
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=pre_ping)
    engine = create_async_engine(url, **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
