"""Prometheus metrics for every service: `GET /metrics`, from OpenTelemetry instruments.

Each service has its own `MeterProvider` with a `PrometheusMetricReader` bound to its own
`prometheus_client.CollectorRegistry` (not the process-wide one), so the six services of
`kiban dev` in one process each serve their own series.

Labels are identifiers of code, never of people or data: route templates (`/v1/optouts/{id}`,
never the concrete path), HTTP methods from a fixed list, status codes, event types the service
knows, consumer groups, monitor rule names. No principal, subject, path with an id, query string
or value is ever a label; a request that matched no route is `route="unmatched"`.

What is recorded where:
- HTTP requests and their duration: `HttpMetricsMiddleware`, the outermost ASGI layer, so
  requests refused by the rate limiter, the body limit or the zone guard are counted too;
- outbox (events published by type, relay failures, rows pending): read at scrape time from the
  counters the relay keeps (`OutboxRelay.published_by_type`, `.failures`, `.pending_rows`);
- consumers (handled, retried, dead-lettered by group and type): read at scrape time from each
  runner's `RunnerStats`;
- audit rows not written: read at scrape time from `AuditMiddleware.failed_writes`;
- access-monitor blocks by rule: counted when the service's monitor raises one.

`/metrics` is for the monitoring network only: it answers a caller whose address is inside
`KIBAN_ZONE_GUARD__ALLOWED_NETWORKS` (in both zones: the information zone's API is open, its
metrics are not) and that did not come through a proxy (`Forwarded`, `X-Forwarded-For`,
`X-Real-IP`: Prometheus scrapes pods directly, an ingress always adds one); anyone else gets
403 `metrics_denied`. It is left out of the audit log, tracing and the rate limiter.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE = "unmatched"
_CLIENT_CLOSED = 499  # gone before a response started (as the audit log records it)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_PROXY_HEADERS = (b"forwarded", b"x-forwarded-for", b"x-real-ip")
_RULE = re.compile(r"^[a-z_]{1,32}$")
# Seconds; from a health-sized call to a bulk upload.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ServiceMetrics:
    """The instruments of one service and the registry `/metrics` renders."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self._reader = PrometheusMetricReader(registry=self.registry)
        self.provider = MeterProvider(
            metric_readers=[self._reader],
            resource=Resource.create({"service.name": f"kiban-{service}"}),
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter("kiban")
        self.http_requests = meter.create_counter(
            "kiban.http.requests",
            description="HTTP requests by route template, method and status",
        )
        self.http_duration = meter.create_histogram(
            "kiban.http.request.duration",
            unit="s",
            description="HTTP request duration by route template, method and status",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.monitor_blocks = meter.create_counter(
            "kiban.monitor.blocks",
            description="principals blocked by the access monitor, by rule",
        )
        self._sources: dict[str, list[Callable[[], Iterable[Observation]]]] = {}
        for name, kind, description in (
            ("kiban.outbox.published", "counter", "events the outbox relay published, by type"),
            ("kiban.outbox.relay.failures", "counter", "outbox relay passes that failed"),
            (
                "kiban.outbox.pending",
                "gauge",
                "outbox rows waiting as of the relay's last pass (counted up to 10000)",
            ),
            ("kiban.consumer.handled", "counter", "events handled and committed, by group/type"),
            ("kiban.consumer.retried", "counter", "handler retries, by group and type"),
            ("kiban.consumer.dead.lettered", "counter", "events dead-lettered, by group/type"),
            ("kiban.audit.write.failures", "counter", "request audit rows not written"),
        ):
            sources: list[Callable[[], Iterable[Observation]]] = []
            self._sources[name] = sources
            callback = _gather(sources)
            if kind == "counter":
                meter.create_observable_counter(name, [callback], description=description)
            else:
                meter.create_observable_gauge(name, [callback], description=description)

    def observe(self, name: str, source: Callable[[], Iterable[Observation]]) -> None:
        """Add a scrape-time source to one of the observable instruments above."""
        self._sources[name].append(source)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type: Prometheus text 0.0.4, or OpenMetrics when the
        scraper's `Accept` asks for it."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # --- what a service binds ------------------------------------------------------------

    def watch_relay(self, relay: Any) -> None:
        """`OutboxRelay`: published by type, failures, pending rows."""
        self.observe(
            "kiban.outbox.published",
            lambda: [
                Observation(n, {"type": t}) for t, n in sorted(relay.published_by_type.items())
            ],
        )
        self.observe("kiban.outbox.relay.failures", lambda: [Observation(relay.failures)])
        self.observe("kiban.outbox.pending", lambda: [Observation(relay.pending_rows)])

    def watch_consumers(self, runners: Iterable[Any]) -> None:
        """`ConsumerRunner`s: handled, retried and dead-lettered events by group and type."""
        runners = list(runners)
        for name, attribute in (
            ("kiban.consumer.handled", "handled_by_type"),
            ("kiban.consumer.retried", "retries_by_type"),
            ("kiban.consumer.dead.lettered", "dead_lettered_by_type"),
        ):
            self.observe(name, _by_group_and_type(runners, attribute))

    def watch_audit(self, app: FastAPI) -> None:
        """The app's `AuditMiddleware` (found in the built middleware stack at scrape time)."""

        def failures() -> Iterable[Observation]:
            audit = _find_middleware(app, "failed_writes")
            return [Observation(int(getattr(audit, "failed_writes", 0)))]

        self.observe("kiban.audit.write.failures", failures)

    def watch_monitor(self, monitor: Any) -> None:
        """Count the blocks the access monitor raises, by rule (its `block` coroutine)."""
        block = monitor.block
        counter = self.monitor_blocks

        async def counted(subject: str, rule: str, *args: Any, **kwargs: Any) -> Any:
            result = await block(subject, rule, *args, **kwargs)
            counter.add(1, {"rule": rule if _RULE.fullmatch(rule) else "other"})
            return result

        setattr(monitor, "block", counted)  # noqa: B010 (an instance attribute, not the class)


def _gather(
    sources: list[Callable[[], Iterable[Observation]]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterator[Observation]:
        for source in sources:
            yield from source()

    return callback


def _by_group_and_type(runners: list[Any], attribute: str) -> Callable[[], Iterable[Observation]]:
    def observe() -> Iterator[Observation]:
        for runner in runners:
            counts: Mapping[str, int] = getattr(runner.stats, attribute)
            for event_type, n in sorted(counts.items()):
                yield Observation(n, {"group": runner.group, "type": event_type})

    return observe


def _find_middleware(app: FastAPI, attribute: str) -> object | None:
    layer: object | None = app.middleware_stack
    for _ in range(32):
        if layer is None or hasattr(layer, attribute):
            return layer
        layer = getattr(layer, "app", None)
    return None


class HttpMetricsMiddleware:
    """Pure ASGI middleware: one count and one duration per HTTP request, labelled by route
    template (matched against the app's routes when the request was refused before routing),
    method and status. Paths in `exempt_paths` (probes, scrapes) are not counted."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        routes: Callable[[], Iterable[Any]],
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.exempt_paths = frozenset(exempt_paths)
        self._templates: list[_Template] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def watching_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except asyncio.CancelledError:
            status = status or _CLIENT_CLOSED
            raise
        finally:
            method = str(scope.get("method", ""))
            labels = {
                "route": self._route(scope),
                "method": method if method in _METHODS else "other",
                "status": str(status or 500),
            }
            self.metrics.http_requests.add(1, labels)
            self.metrics.http_duration.record(time.perf_counter() - started, labels)

    def _route(self, scope: Scope) -> str:
        from kiban_common.security._routes import route_template

        root_path = str(scope.get("root_path", ""))
        template = route_template(scope, root_path=root_path)
        if template is not None:
            return template
        # Refused before routing (rate, body, zone) or not found: find the route it would have
        # matched, by template; never the concrete path.
        if self._templates is None:
            self._templates = _templates(self.routes())
        path = str(scope.get("path", ""))[len(root_path) :] or "/"
        method = str(scope.get("method", ""))
        partial = None
        for regex, template, methods in self._templates:
            if regex.match(path):
                if methods is None or method in methods:
                    return template
                partial = partial or template  # the path exists under another method (405)
        return partial or UNMATCHED_ROUTE


_Template = tuple[re.Pattern[str], str, frozenset[str] | None]


def _templates(routes: Iterable[Any]) -> list[_Template]:
    """(regex, template, methods) of every HTTP route, routers included into the app flattened
    (FastAPI's `iter_route_contexts` where it exists, else the routes themselves)."""
    try:
        from fastapi.routing import iter_route_contexts

        flat: Iterable[Any] = iter_route_contexts(list(routes))
    except ImportError:  # FastAPI before included routers became contexts
        flat = routes
    found = []
    for route in flat:
        regex = getattr(route, "path_regex", None)
        template = getattr(route, "path_format", None)
        if isinstance(regex, re.Pattern) and isinstance(template, str):
            methods = getattr(route, "methods", None)
            found.append((regex, template, frozenset(methods) if methods else None))
    return found


def metrics_endpoint(
    metrics: ServiceMetrics, allowed_networks: Iterable[IPNetwork | str]
) -> Callable[[Request], Any]:
    networks = tuple(ipaddress.ip_network(n) for n in allowed_networks)

    async def serve_metrics(request: Request) -> Response:
        if not _scraper(request.scope, networks):
            return JSONResponse(
                {
                    "code": "metrics_denied",
                    "message": "metrics are served to the monitoring network only",
                },
                status_code=403,
            )
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    return serve_metrics


def _scraper(scope: Scope, networks: tuple[IPNetwork, ...]) -> bool:
    from kiban_common.security._zone import client_in_networks

    if any(name in _PROXY_HEADERS for name, _ in scope.get("headers", [])):
        return False
    return client_in_networks(scope.get("client"), networks)


def install_metrics(
    app: FastAPI,
    runtime: Any,
    *,
    allowed_networks: Iterable[IPNetwork | str],
    exempt_paths: Collection[str] = (),
) -> ServiceMetrics:
    """Mount `GET /metrics` on a service's app and bind its instruments to the runtime's relay
    and consumers, the app's audit middleware and access monitor. Call last in the app factory:
    the HTTP middleware must be the outermost layer."""
    metrics = ServiceMetrics(runtime.definition.name)
    metrics.watch_relay(runtime.relay)
    metrics.watch_consumers(runtime.consumers)
    metrics.watch_audit(app)
    monitor = getattr(app.state, "access_monitor", None)
    if monitor is not None:
        metrics.watch_monitor(monitor)
    app.add_api_route(
        METRICS_PATH,
        metrics_endpoint(metrics, allowed_networks),
        methods=["GET"],
        include_in_schema=False,
    )
    app.add_middleware(
        HttpMetricsMiddleware,
        metrics=metrics,
        routes=lambda: app.router.routes,
        exempt_paths={*exempt_paths, METRICS_PATH},
    )
    app.state.metrics = metrics
    return metrics
