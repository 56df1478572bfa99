"""Tracing with OpenTelemetry (providers per service, trace context through events), and
Prometheus metrics (`GET /metrics`) from OpenTelemetry instruments."""

from kiban_common.telemetry._logging import (
    PARAMETER_LOGGERS,
    RedactExceptionMessages,
    configure_logging,
    quiet_parameter_loggers,
)
from kiban_common.telemetry._metrics import (
    METRICS_PATH,
    HttpMetricsMiddleware,
    ServiceMetrics,
    install_metrics,
)
from kiban_common.telemetry._tracing import (
    Exporter,
    TraceContextMiddleware,
    build_tracer_provider,
    consume_span,
    current_traceparent,
    headers_carrier,
    is_silent,
)

__all__ = [
    "METRICS_PATH",
    "PARAMETER_LOGGERS",
    "Exporter",
    "HttpMetricsMiddleware",
    "RedactExceptionMessages",
    "ServiceMetrics",
    "TraceContextMiddleware",
    "build_tracer_provider",
    "configure_logging",
    "consume_span",
    "current_traceparent",
    "headers_carrier",
    "install_metrics",
    "is_silent",
    "quiet_parameter_loggers",
]
