"""Tracing with OpenTelemetry: providers per service and trace context through events."""

from kiban_common.telemetry._logging import (
    PARAMETER_LOGGERS,
    RedactExceptionMessages,
    configure_logging,
    quiet_parameter_loggers,
)
from kiban_common.telemetry._tracing import (
    Exporter,
    build_tracer_provider,
    consume_span,
    current_traceparent,
    headers_carrier,
)

__all__ = [
    "PARAMETER_LOGGERS",
    "Exporter",
    "RedactExceptionMessages",
    "build_tracer_provider",
    "configure_logging",
    "consume_span",
    "current_traceparent",
    "headers_carrier",
    "quiet_parameter_loggers",
]
