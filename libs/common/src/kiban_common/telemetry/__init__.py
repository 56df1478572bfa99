"""Tracing with OpenTelemetry: providers per service and trace context through events."""

from kiban_common.telemetry._logging import RedactExceptionMessages, configure_logging
from kiban_common.telemetry._tracing import (
    Exporter,
    build_tracer_provider,
    consume_span,
    current_traceparent,
    headers_carrier,
)

__all__ = [
    "Exporter",
    "RedactExceptionMessages",
    "build_tracer_provider",
    "configure_logging",
    "consume_span",
    "current_traceparent",
    "headers_carrier",
]
