"""The seam between the bus and a broker: Kafka in production, an in-process broker embedded.

The consumer runner and the outbox relay speak only this interface, so the two implementations
are tested by one shared suite (arroyo's pattern) instead of patching either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kiban_common.events import WireMessage


@dataclass(frozen=True, slots=True)
class Received:
    """A message as a consumer sees it: where it sits in the log, and its bytes."""

    topic: str
    partition: int
    offset: int
    message: WireMessage


class BrokerUnavailable(ConnectionError):
    """The broker did not take or acknowledge messages in time."""


class Consumer(Protocol):
    async def getmany(self, *, timeout_ms: int, max_records: int) -> list[Received]:
        """Next messages in log order per partition; [] after `timeout_ms` without any."""

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Record `(topic, partition) -> next offset to read` for the group."""

    async def stop(self) -> None: ...


class Transport(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def ready(self) -> bool:
        """True when the broker answers now (for `/readyz`)."""

    async def ensure_topics(self, topics: Sequence[str]) -> None: ...

    async def send(self, messages: Sequence[WireMessage]) -> None:
        """Return only once the broker has acknowledged every message, in order per key."""

    async def consumer(self, group: str, topics: Sequence[str]) -> Consumer: ...
