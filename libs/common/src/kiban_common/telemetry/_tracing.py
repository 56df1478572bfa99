"""OpenTelemetry tracing: exporter by setting, W3C trace context across HTTP and the bus.

Spans carry ids and event types only. Never put a name, a birth date, a number from a document or
any request body into a span attribute: traces leave the core zone.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

Exporter = Literal["none", "console", "otlp"]
_TRACER = "kiban"


def build_tracer_provider(
    service_name: str,
    exporter: Exporter,
    *,
    otlp_endpoint: str | None = None,
    extra_exporter: SpanExporter | None = None,
) -> TracerProvider:
    """A provider for one service. With several services in one process (`kiban dev`) each
    keeps its own provider, so spans name the service that made them."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"kiban-{service_name}"}))
    if exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if extra_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
    if exporter == "none" and extra_exporter is None:
        _SILENT.add(provider)
    return provider


# Providers that export nowhere: consumers skip making spans for them (a tenth of a consumer's
# time per event) but still carry the producer's trace context on to the events they emit.
_SILENT: weakref.WeakSet[trace.TracerProvider] = weakref.WeakSet()


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the active span, to store with an outgoing event."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def consume_span(
    provider: trace.TracerProvider,
    *,
    event_type: str,
    event_id: str,
    group: str,
    traceparent: str | None,
) -> Iterator[trace.Span]:
    """A consumer span that continues the producer's trace (from the event's traceparent)."""
    parent = propagate.extract({"traceparent": traceparent} if traceparent else {})
    token = context.attach(parent)
    if provider in _SILENT:
        try:
            yield trace.get_current_span()
        finally:
            context.detach(token)
        return
    tracer = provider.get_tracer(_TRACER)
    try:
        with tracer.start_as_current_span(
            f"process {event_type}",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": event_type,
                "messaging.message.id": event_id,
                "messaging.consumer.group.name": group,
            },
        ) as span:
            yield span
    finally:
        context.detach(token)


def headers_carrier(headers: Sequence[tuple[str, bytes]]) -> Mapping[str, str]:
    return {k: v.decode(errors="replace") for k, v in headers}
