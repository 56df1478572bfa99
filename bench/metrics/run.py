"""What `/metrics` costs: the HTTP metrics middleware per request, against the same trivial ASGI
app without it as the baseline measured in the same run, and one scrape of a service-sized
registry (30 routes x 3 statuses, 10 event types, 3 consumer groups).

    uv run python bench/metrics/run.py [--requests 20000]

Prints CPU seconds (this process, `time.process_time`) per 1,000 requests with and without the
middleware, the difference per request in microseconds, and CPU milliseconds per scrape, with
the machine's load average (figures are noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from kiban_common.telemetry import HttpMetricsMiddleware, ServiceMetrics


@dataclass
class _Stats:
    handled_by_type: Counter[str] = field(default_factory=Counter)
    retries_by_type: Counter[str] = field(default_factory=Counter)
    dead_lettered_by_type: Counter[str] = field(default_factory=Counter)


@dataclass
class _Runner:
    group: str
    stats: _Stats = field(default_factory=_Stats)


@dataclass
class _Relay:
    published_by_type: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    pending_rows: int = 0


async def _ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app(routes: int) -> Starlette:
    return Starlette(routes=[Route(f"/v1/r{i}/{{item_id}}", _ok) for i in range(routes)])


async def _drive(app: Any, n: int, paths: list[str]) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    started = time.process_time()
    for i in range(n):
        path = paths[i % len(paths)]
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "http_version": "1.1",
        }
        await app(scope, receive, send)
    return time.process_time() - started


async def main(requests: int) -> None:
    routes = 30
    paths = [f"/v1/r{i % routes}/id-{i}" for i in range(1000)]
    bare = _app(routes)
    metrics = ServiceMetrics("bench")
    wrapped = _app(routes)
    measured = HttpMetricsMiddleware(wrapped, metrics=metrics, routes=lambda: wrapped.routes)
    await _drive(bare, 1000, paths)  # warm both
    await _drive(measured, 1000, paths)
    base = await _drive(bare, requests, paths)
    with_metrics = await _drive(measured, requests, paths)

    relay = _Relay(Counter({f"kiban.bench.type-{i}.v1": 1000 + i for i in range(10)}))
    metrics.watch_relay(relay)
    runners = [_Runner(f"kiban-bench-{g}") for g in range(3)]
    for runner in runners:
        runner.stats.handled_by_type.update({f"kiban.bench.type-{i}.v1": 500 for i in range(10)})
    metrics.watch_consumers(runners)
    for status in (200, 404, 429):  # 3 statuses per route
        for i in range(routes):
            metrics.http_requests.add(
                1, {"route": f"/v1/r{i}", "method": "GET", "status": str(status)}
            )
    scrapes = 200
    started = time.process_time()
    for _ in range(scrapes):
        body, _ = metrics.render()
    scrape = time.process_time() - started
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"requests: {requests}, {routes} routes, ids in paths")
    print(f"  bare app:        {base / requests * 1000:.3f} CPU s / 1,000 requests")
    print(f"  with metrics:    {with_metrics / requests * 1000:.3f} CPU s / 1,000 requests")
    print(f"  overhead:        {(with_metrics - base) / requests * 1e6:.1f} CPU µs / request")
    print(f"scrape: {len(body)} bytes, {scrape / scrapes * 1000:.2f} CPU ms / scrape")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    asyncio.run(main(parser.parse_args().requests))
