"""The FastAPI app of a service: its routers plus what every service has the same.

`/healthz` (the process answers), `/readyz` (database and broker reachable), `/openapi.json`,
JSON errors with `code` and `message`, the zone guard, bearer-token verification, the audit log
of every request and tracing. Resources open in the lifespan, never at import time.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import Span

from kiban_common.bus import MemoryBroker
from kiban_common.events import Zone
from kiban_common.security import (
    AuditMiddleware,
    BodyLimitMiddleware,
    FileKeySource,
    KeySource,
    RateLimitMiddleware,
    TokenVerifier,
    UrlKeySource,
    ZoneGuard,
    install_error_handlers,
)
from kiban_common.security._routes import masked_path
from kiban_common.service._definition import ServiceDefinition
from kiban_common.service._monitor import AccessMonitor, security_router
from kiban_common.service._runtime import ServiceRuntime
from kiban_common.settings import KibanSettings, SettingsError
from kiban_common.telemetry import (
    METRICS_PATH,
    TraceContextMiddleware,
    install_metrics,
    is_silent,
)

_UNGUARDED = ("/healthz", "/readyz")
# Probes and Prometheus scrapes: no audit row, no rate limit, no span (the zone guard still
# applies to /metrics, and the endpoint itself admits the monitoring network only).
_UNAUDITED = (*_UNGUARDED, METRICS_PATH)


def build_app(
    definition: ServiceDefinition,
    settings: KibanSettings,
    *,
    broker: MemoryBroker | None = None,
) -> FastAPI:
    runtime = ServiceRuntime(definition, settings, broker=broker)
    http = httpx.AsyncClient(timeout=10)
    verifier = TokenVerifier(
        issuer=_required(settings.auth.issuer, "KIBAN_AUTH__ISSUER"),
        key_source=_key_source(settings, http),
        audience=settings.auth.audience,
        cache_seconds=settings.auth.verified_cache_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.running():
            if settings.gc_freeze:
                freeze_heap()
            yield
        await http.aclose()

    app = FastAPI(
        title=definition.title or f"Kiban {definition.name}",
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.token_verifier = verifier
    app.state.zone = definition.zone
    monitor = AccessMonitor(runtime)
    app.state.access_monitor = monitor
    app.state.access_check = monitor.check
    install_error_handlers(app)
    _health_routes(app, runtime)
    for router in definition.routers:
        app.include_router(router)
    app.include_router(security_router())
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.http.max_body_bytes,
        limits=definition.body_limits,
    )
    # Added last = outermost: the audit log also records calls the zone guard refused.
    app.add_middleware(
        ZoneGuard,
        zone=definition.zone.value,
        allowed_networks=settings.zone_guard.allowed_networks
        if definition.zone is Zone.CORE
        else (),
        exempt_paths=_UNGUARDED,
    )
    app.add_middleware(
        AuditMiddleware,
        sessions=runtime.sessions,
        log=runtime.audit,
        exempt_paths=_UNAUDITED,
    )
    # Outermost: a flood is refused before it costs a zone check, a token check or an audit row.
    app.add_middleware(
        RateLimitMiddleware,
        rate=settings.limits.requests_per_second,
        burst=settings.limits.burst,
        exempt_paths=_UNAUDITED,
    )
    if is_silent(runtime.tracer_provider):
        # Spans would go nowhere: the trace context alone (audit rows, emitted events).
        app.add_middleware(TraceContextMiddleware)
    else:
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=runtime.tracer_provider,
            excluded_urls="healthz,readyz,/metrics$",
            server_request_hook=_scrub_request_span,
            # One server span per request; the per-message "http send"/"http receive"
            # children doubled the tracing cost of a request and carried nothing the server
            # span lacks.
            exclude_spans=["receive", "send"],
        )
    # Outermost of all: HTTP metrics count what the layers above refused too.
    install_metrics(
        app, runtime, allowed_networks=settings.zone_guard.allowed_networks, exempt_paths=_UNGUARDED
    )
    return app


def freeze_heap() -> None:
    """Move every object alive now out of the garbage collector's generations (`gc.freeze`),
    so full collections stop walking what lives as long as the process (modules, schemas, the
    app; linkage's index). Frozen objects are still freed by reference counting; only cycles
    among them would wait, so each call first unfreezes and collects everything: nothing
    frozen leaks beyond the next call."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


# Span attributes the ASGI instrumentation fills with the concrete path, URL or query string.
_PATH_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.full", "url.query")


def _scrub_request_span(span: Span, scope: dict[str, Any]) -> None:
    """An HTTP span keeps the route template, never the concrete path or query: ids, and
    whatever a caller puts in a path, would otherwise leave the zone with the traces."""
    if not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    route = attributes.get("http.route")
    shown = str(route) if route else masked_path(str(scope.get("path", "")))
    for key in _PATH_ATTRIBUTES:
        if key in attributes:
            span.set_attribute(key, "" if key == "url.query" else shown)


def _health_routes(app: FastAPI, runtime: ServiceRuntime) -> None:
    @app.get("/healthz", tags=["health"], summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {
            "status": "ok",
            "service": runtime.definition.name,
            "zone": runtime.definition.zone.value,
        }

    @app.get(
        "/readyz",
        tags=["health"],
        summary="the database and the broker answer",
        responses={503: {"description": "not ready"}},
    )
    async def readyz(request: Request) -> Any:
        checks = await runtime.readiness()
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        return JSONResponse(
            status_code=503,
            content={
                "code": "not_ready",
                "message": "a dependency is unavailable",
                "checks": checks,
            },
        )


def _key_source(settings: KibanSettings, http: httpx.AsyncClient) -> KeySource:
    if settings.auth.jwks_file is not None:
        return FileKeySource(settings.auth.jwks_file)
    if settings.auth.jwks_url is not None:
        return UrlKeySource(settings.auth.jwks_url, http)
    raise SettingsError(
        "invalid settings:\n  KIBAN_AUTH__JWKS_URL or KIBAN_AUTH__JWKS_FILE: "
        "required to verify tokens"
    )


def _required(value: str | None, variable: str) -> str:
    if not value:
        raise SettingsError(f"invalid settings:\n  {variable}: required")
    return value
