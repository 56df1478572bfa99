"""The resources of one running service, opened in its lifespan and closed in reverse.

Engine → migrations (or a check that they were applied) → broker → outbox relay → consumers.
Background tasks are supervised: one that dies is logged by type and restarted after a pause,
so a bug in one handler cannot silently stop a service's event flow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from kiban_common.bus import Bus, ConsumerRunner, KafkaTransport, MemoryBroker, MemoryTransport
from kiban_common.db import (
    OUTBOX,
    PROCESSED,
    create_engine,
    current_revision,
    migrate,
    session_factory,
)
from kiban_common.outbox import OutboxRelay, OutboxWriter, Transaction, transaction
from kiban_common.security import AUDIT_ANCHORS_TABLE, AUDIT_TABLE, AuditLog
from kiban_common.service._crypto import ServiceCrypto
from kiban_common.service._definition import ServiceDefinition
from kiban_common.settings import KibanSettings, SettingsError
from kiban_common.telemetry import build_tracer_provider

log = logging.getLogger("kiban.service")


class ServiceRuntime:
    def __init__(
        self,
        definition: ServiceDefinition,
        settings: KibanSettings,
        *,
        broker: MemoryBroker | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if settings.zone is not definition.zone:
            raise SettingsError(
                f"invalid settings:\n  KIBAN_ZONE: {definition.name} runs in the "
                f"{definition.zone.value} zone, not {settings.zone.value}"
            )
        self.definition = definition
        self.settings = settings
        self.tracer_provider = tracer_provider or build_tracer_provider(
            definition.name,
            settings.telemetry.exporter,
            otlp_endpoint=settings.telemetry.otlp_endpoint,
        )
        pool = settings.db_pool
        self.engine: AsyncEngine = create_engine(
            settings.database_url,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pre_ping=pool.pre_ping,
        )
        self.sessions = session_factory(self.engine)
        self.outbox_table = definition.metadata.tables[OUTBOX]
        self.processed_table = definition.metadata.tables[PROCESSED]
        if settings.bus == "memory":
            transport: Any = MemoryTransport(broker)
        else:
            assert settings.kafka_bootstrap is not None  # the settings model checks it
            transport = KafkaTransport(settings.kafka_bootstrap, settings.kafka)
        self.bus = Bus(
            transport, service=definition.name, zone=definition.zone, registry=definition.registry
        )
        self.relay = OutboxRelay(
            self.sessions,
            self.outbox_table,
            self.bus.publish,
            batch_size=settings.outbox.batch_size,
            poll_interval=settings.outbox.poll_interval_ms / 1000,
        )
        self.crypto = ServiceCrypto(settings.crypto)
        self.audit = AuditLog(
            definition.metadata.tables[AUDIT_TABLE], definition.metadata.tables[AUDIT_ANCHORS_TABLE]
        )
        self.stopping = asyncio.Event()
        self.outbox = OutboxWriter(
            self.outbox_table,
            zone=definition.zone,
            registry=definition.registry,
            on_commit=self.relay.wake,
        )
        self.context: Any = definition.context(self) if definition.context else None
        consumers = definition.consumers
        groups = consumers(self) if callable(consumers) else consumers
        self.consumers: list[ConsumerRunner] = [
            self.bus.consumer(
                definition.group(suffix),
                handlers,
                transactions=self.transaction,
                processed=self.processed_table,
                tracer_provider=self.tracer_provider,
                max_attempts=settings.consumer.max_attempts,
                backoff_initial=settings.consumer.backoff_initial_ms / 1000,
                backoff_max=settings.consumer.backoff_max_ms / 1000,
                batch_size=settings.consumer.batch_size,
            )
            for suffix, handlers in groups.items()
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One unit of work: state changes and emitted events commit together."""
        return transaction(self.sessions, self.outbox, self.audit)

    async def start(self) -> None:
        if self.settings.migrate_on_start:
            await migrate(self.engine, self.definition.migrations)
        else:
            await self._require_migrated()
        await self.bus.start()
        topics = [t for c in self.consumers for t in c.topics]
        if topics:
            await self.bus.transport.ensure_topics(topics)
        self._tasks.append(self._supervise("outbox-relay", self.relay.run))
        self._tasks.append(
            self._supervise(
                "audit-chainer", lambda: self.audit.run_chainer(self.sessions, self.stopping)
            )
        )
        for runner in self.consumers:
            self._tasks.append(self._supervise(runner.group, runner.run))
        for name, loop in self.definition.background.items():
            self._tasks.append(self._supervise(name, _bind(loop, self)))

    async def stop(self) -> None:
        self._stopping = True
        self.stopping.set()
        self.relay.stop()
        for runner in self.consumers:
            runner.stop()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=15)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._tasks.clear()
        try:  # entries committed by the last requests and handlers: link them before leaving
            await self.audit.chain_all(self.sessions)
        except Exception as exc:
            log.warning(
                "audit entries left unchained (%s); the next start chains them", type(exc).__name__
            )
        await self.bus.stop()
        await self.engine.dispose()
        self.tracer_provider.shutdown()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ServiceRuntime]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def readiness(self) -> dict[str, str]:
        checks = {"database": "ok", "broker": "ok"}
        try:
            async with asyncio.timeout(2):
                async with self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            checks["database"] = f"unavailable ({type(exc).__name__})"
        if not await self.bus.ready():
            checks["broker"] = "unavailable"
        for name, check in self.definition.readiness.items():
            try:
                checks[name] = check(self)
            except Exception as exc:
                checks[name] = f"unavailable ({type(exc).__name__})"
        return checks

    async def _require_migrated(self) -> None:
        config = Config()
        config.set_main_option("script_location", self.definition.migrations)
        head = ScriptDirectory.from_config(config).get_current_head()
        current = await current_revision(self.engine)
        if current != head:
            raise SettingsError(
                f"the {self.definition.name} database is at revision {current or 'none'}, "
                f"the code needs {head}: run `kiban migrate {self.definition.name}` "
                "(or set KIBAN_MIGRATE_ON_START=true)"
            )

    def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def supervised() -> None:
            while not self._stopping:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.error(
                        "%s/%s stopped (%s); restarting in 1s",
                        self.definition.name,
                        name,
                        type(exc).__name__,
                    )
                    await asyncio.sleep(1)

        return asyncio.create_task(supervised(), name=f"{self.definition.name}:{name}")


def _bind(
    loop: Callable[[ServiceRuntime], Awaitable[None]], runtime: ServiceRuntime
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        await loop(runtime)

    return run
