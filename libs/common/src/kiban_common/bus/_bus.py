"""The bus a service holds: a transport plus the zone rules, checked on every publish and
subscription so that a misconfigured service fails loudly instead of leaking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace
from sqlalchemy import Table

from kiban_common.bus._runner import ConsumerRunner, Handler, Transactions, dead_letter_topic
from kiban_common.bus._transport import Transport
from kiban_common.events import REGISTRY, EventRegistry, WireMessage, Zone, ZoneViolation
from kiban_common.events import may_consume as _may_consume
from kiban_common.events import may_publish as _may_publish


class Bus:
    def __init__(
        self,
        transport: Transport,
        *,
        service: str,
        zone: Zone,
        registry: EventRegistry = REGISTRY,
    ) -> None:
        self.transport = transport
        self.service = service
        self.zone = zone
        self.registry = registry

    async def start(self) -> None:
        await self.transport.start()

    async def stop(self) -> None:
        await self.transport.stop()

    async def ready(self) -> bool:
        return await self.transport.ready()

    def check_publish(self, event_type: str) -> None:
        spec = self.registry.get(event_type)
        if not _may_publish(self.zone, spec.classification, spec.sealing):
            raise ZoneViolation(
                zone=self.zone,
                event_type=event_type,
                classification=spec.classification,
                verb="publish",
            )

    def check_consume(self, event_type: str) -> None:
        spec = self.registry.get(event_type)
        if not _may_consume(self.zone, spec.classification):
            raise ZoneViolation(
                zone=self.zone,
                event_type=event_type,
                classification=spec.classification,
                verb="consume",
            )

    async def publish(self, messages: Sequence[WireMessage]) -> None:
        topics = sorted({m.topic for m in messages})
        for topic in topics:
            self.check_publish(topic)
        await self.transport.ensure_topics(topics)
        await self.transport.send(messages)

    def consumer(
        self,
        group: str,
        handlers: Mapping[str, Handler],
        *,
        transactions: Transactions,
        processed: Table,
        tracer_provider: trace.TracerProvider | None = None,
        **options: Any,
    ) -> ConsumerRunner:
        """A runner for `handlers` (event type → handler); refuses types the zone may not read."""
        for event_type in handlers:
            self.check_consume(event_type)
        return ConsumerRunner(
            group=group,
            handlers=handlers,
            transport=self.transport,
            registry=self.registry,
            transactions=transactions,
            processed=processed,
            tracer_provider=tracer_provider,
            **options,
        )


__all__ = ["Bus", "dead_letter_topic"]
