"""The stack the delivery proofs run on: in-process bus + SQLite, or real Kafka + PostgreSQL.

The same tests run against both (arroyo's shared-suite pattern), so the embedded mode is held to
the semantics the production mode has.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kiban_common.bus import KafkaTransport, MemoryBroker, MemoryTransport, Transport
from kiban_common.events import EventRegistry, Zone
from kiban_common.settings import KafkaSettings

from .scenario import Node, make_node, make_registry


@dataclass
class Stack:
    kind: str
    registry: EventRegistry
    done: str  # the pseudonymous test event type
    secret: str  # the identifiable test event type
    transport: Callable[[], Transport]
    database: Callable[[str], str]
    stop_broker: Callable[[], Awaitable[None]]
    start_broker: Callable[[], Awaitable[None]]
    nodes: list[Node] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def node(self, name: str, zone: Zone = Zone.CORE) -> Node:
        node = await make_node(name, zone, self.database(name), self.transport(), self.registry)
        self.nodes.append(node)
        return node

    def start(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        for node in self.nodes:
            node.relay.stop()
            for runner in node.runners:
                runner.stop()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=20)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for node in self.nodes:
            await node.bus.stop()
            await node.engine.dispose()


@pytest.fixture(params=["memory+sqlite", "kafka+postgres"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    registry, done, secret = make_registry()
    if request.param == "memory+sqlite":
        broker = MemoryBroker()

        async def stop_memory() -> None:
            broker.available = False

        async def start_memory() -> None:
            broker.available = True

        s = Stack(
            request.param,
            registry,
            done,
            secret,
            transport=lambda: MemoryTransport(broker),
            database=lambda name: f"sqlite:///{tmp_path}/{name}.db",
            stop_broker=stop_memory,
            start_broker=start_memory,
        )
    else:
        kafka = request.getfixturevalue("kafka_broker")
        postgres = request.getfixturevalue("postgres_cluster")
        options = KafkaSettings(topic_partitions=1, request_timeout_ms=5000)
        suffix = secrets.token_hex(3)

        async def stop_kafka() -> None:
            await asyncio.to_thread(kafka.stop)

        async def start_kafka() -> None:
            await asyncio.to_thread(kafka.start)

        s = Stack(
            request.param,
            registry,
            done,
            secret,
            transport=lambda: KafkaTransport(kafka.bootstrap, options),
            database=lambda name: postgres.create_database(f"{name}_{suffix}"),
            stop_broker=stop_kafka,
            start_broker=start_kafka,
        )
    try:
        yield s
    finally:
        await s.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """Wait until `check()` holds; fail with the timeout otherwise."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.05)
