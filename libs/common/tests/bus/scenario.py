"""Two small services wired with the real kiban_common pieces, for the delivery proofs.

Each test gets event types of its own (`kiban.<random>.thing-done.v1`): topics are event types,
and a topic on the session's Kafka broker would otherwise still hold an earlier test's events.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from kiban_common.bus import Bus, ConsumerRunner, Handler, Transport
from kiban_common.db import (
    create_engine,
    create_shared_tables,
    session_factory,
    shared_tables,
)
from kiban_common.events import (
    Classification,
    Event,
    EventData,
    EventRegistry,
    EventSpec,
    Sealing,
    Zone,
)
from kiban_common.outbox import OutboxRelay, OutboxWriter, Transaction, transaction


class ThingDone(EventData):
    thing: str
    n: int


class SecretThing(EventData):
    sealed: str


def make_registry() -> tuple[EventRegistry, str, str]:
    svc = "t" + secrets.token_hex(4)
    done = f"kiban.{svc}.thing-done.v1"
    secret = f"kiban.{svc}.secret-thing.v1"
    registry = EventRegistry(
        [
            EventSpec(
                done,
                Classification.PSEUDONYMOUS,
                ThingDone,
                producers=frozenset({"producer"}),
                consumers=frozenset({"consumer"}),
            ),
            EventSpec(
                secret,
                Classification.IDENTIFIABLE,
                SecretThing,
                producers=frozenset({"producer"}),
                consumers=frozenset({"consumer"}),
                sealing=Sealing.SYMMETRIC,
            ),
        ]
    )
    return registry, done, secret


@dataclass
class Node:
    """One service: its database, outbox, relay and bus."""

    name: str
    zone: Zone
    engine: AsyncEngine
    metadata: MetaData
    bus: Bus
    relay: OutboxRelay
    outbox: OutboxWriter
    runners: list[ConsumerRunner] = field(default_factory=list)

    def transaction(self) -> Any:
        return transaction(session_factory(self.engine), self.outbox)

    def consumer(self, group: str, handlers: dict[str, Handler], **options: Any) -> ConsumerRunner:
        runner = self.bus.consumer(
            group,
            handlers,
            transactions=self.transaction,
            processed=self.metadata.tables["kiban_processed_events"],
            backoff_initial=0.01,
            backoff_max=0.05,
            **options,
        )
        self.runners.append(runner)
        return runner


def things(metadata: MetaData) -> Table:
    return Table("things", metadata, Column("name", String(64), primary_key=True))


def effects(metadata: MetaData) -> Table:
    # Deliberately NOT unique on event id: a second application would show as a second row.
    return Table(
        "effects",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False),
        Column("thing", String(64), nullable=False),
        Column("n", Integer, nullable=False),
    )


async def make_node(
    name: str, zone: Zone, url: str, transport: Transport, registry: EventRegistry
) -> Node:
    metadata = MetaData()
    shared_tables(metadata)
    things(metadata)
    effects(metadata)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(create_shared_tables)
        await conn.run_sync(
            lambda c: metadata.create_all(
                c, tables=[metadata.tables["things"], metadata.tables["effects"]]
            )
        )
    bus = Bus(transport, service=name, zone=zone, registry=registry)
    await bus.start()
    sessions = session_factory(engine)
    relay = OutboxRelay(
        sessions,
        metadata.tables["kiban_outbox"],
        bus.publish,
        batch_size=100,
        poll_interval=0.02,
        max_backoff=0.5,
    )
    outbox = OutboxWriter(
        metadata.tables["kiban_outbox"], zone=zone, registry=registry, on_commit=relay.wake
    )
    return Node(name, zone, engine, metadata, bus, relay, outbox)


def record_effect(node: Node) -> Handler:
    table = node.metadata.tables["effects"]

    async def handle(event: Event[Any], tx: Transaction) -> None:
        await tx.session.exec(
            insert(table).values(event_id=event.id, thing=event.data.thing, n=event.data.n)
        )

    return handle


async def effect_rows(node: Node) -> list[tuple[str, str, int]]:
    table = node.metadata.tables["effects"]
    async with node.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(table.c.event_id, table.c.thing, table.c.n).order_by(table.c.id)
            )
        ).all()
    return [(r.event_id, r.thing, r.n) for r in rows]


async def count(node: Node, table_name: str) -> int:
    async with node.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count()).select_from(node.metadata.tables[table_name])
                )
            ).scalar_one()
        )


async def do_thing(node: Node, event_type: str, thing: str, n: int, key: str | None = None) -> str:
    """A state change and its event, in one transaction (what a service endpoint does)."""
    event = Event(
        type=event_type,
        source=f"/kiban/{node.name}",
        key=key or thing,
        data=ThingDone(thing=thing, n=n),
    )
    async with node.transaction() as tx:
        await tx.session.exec(insert(node.metadata.tables["things"]).values(name=f"{thing}-{n}"))
        await tx.emit(event)
    return event.id


Waitable = Callable[[], Awaitable[bool]]
