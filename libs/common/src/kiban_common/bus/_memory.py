"""An in-process broker with Kafka's delivery semantics, for the embedded mode and tests.

One partition per topic, an append-only log, committed offsets per consumer group. A consumer
starts from its group's committed offset, so a crash before commit redelivers just as Kafka
does. When a second consumer of the same group joins, it takes the partitions over (a rebalance).
State lives in memory: a restart of the process loses published-but-unconsumed events, which is
why production uses Kafka.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence

from kiban_common.bus._transport import BrokerUnavailable, Consumer, Received
from kiban_common.events import WireMessage


class MemoryBroker:
    def __init__(self) -> None:
        self.logs: dict[str, list[WireMessage]] = defaultdict(list)
        self.committed: dict[tuple[str, str], int] = {}
        self.owners: dict[tuple[str, str], int] = {}
        self.available = True
        self._ids = itertools.count(1)
        self._arrival: asyncio.Condition | None = None

    @property
    def arrival(self) -> asyncio.Condition:
        if self._arrival is None:
            self._arrival = asyncio.Condition()
        return self._arrival

    async def append(self, messages: Sequence[WireMessage]) -> None:
        if not self.available:
            raise BrokerUnavailable("the in-process broker is stopped")
        for message in messages:
            self.logs[message.topic].append(message)
        async with self.arrival:
            self.arrival.notify_all()

    def join(self, group: str, topics: Sequence[str]) -> int:
        member = next(self._ids)
        for topic in topics:
            self.owners[(group, topic)] = member
        return member


class MemoryTransport:
    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready(self) -> bool:
        return self.broker.available

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        for topic in topics:
            self.broker.logs.setdefault(topic, [])

    async def send(self, messages: Sequence[WireMessage]) -> None:
        await self.broker.append(messages)

    async def consumer(self, group: str, topics: Sequence[str]) -> Consumer:
        return MemoryConsumer(self.broker, group, topics)


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, group: str, topics: Sequence[str]) -> None:
        self._broker = broker
        self._group = group
        self._topics = list(topics)
        self._member = broker.join(group, topics)
        self._positions = {t: broker.committed.get((group, t), 0) for t in topics}

    def _owned(self) -> list[str]:
        return [
            t for t in self._topics if self._broker.owners.get((self._group, t)) == self._member
        ]

    def _take(self, max_records: int) -> list[Received]:
        out: list[Received] = []
        for topic in self._owned():
            log = self._broker.logs.get(topic, [])
            position = self._positions[topic]
            while position < len(log) and len(out) < max_records:
                out.append(Received(topic, 0, position, log[position]))
                position += 1
            self._positions[topic] = position
        return out

    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Received]:
        if not self._broker.available:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        taken = self._take(max_records)
        if taken:
            return taken
        arrival = self._broker.arrival
        try:
            async with arrival:
                await asyncio.wait_for(arrival.wait(), timeout=timeout_ms / 1000)
        except TimeoutError:
            return []
        return self._take(max_records)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if not self._broker.available:
            raise BrokerUnavailable("the in-process broker is stopped")
        for (topic, _partition), offset in offsets.items():
            if self._broker.owners.get((self._group, topic)) == self._member:
                self._broker.committed[(self._group, topic)] = offset

    async def stop(self) -> None:
        for topic in self._topics:
            if self._broker.owners.get((self._group, topic)) == self._member:
                del self._broker.owners[(self._group, topic)]
