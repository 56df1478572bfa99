"""Wiring shared by every service: definition, runtime (lifespan resources) and app factory."""

from fastapi import Request

from kiban_common.service._app import build_app, freeze_heap
from kiban_common.service._crypto import ServiceCrypto
from kiban_common.service._definition import Handlers, ServiceDefinition
from kiban_common.service._runtime import ServiceRuntime


async def current_runtime(request: Request) -> ServiceRuntime:
    """FastAPI dependency: the runtime of the service serving this request. A coroutine on
    purpose: FastAPI runs a plain-`def` dependency in a worker thread, a hop per request."""
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


__all__ = [
    "Handlers",
    "ServiceCrypto",
    "ServiceDefinition",
    "ServiceRuntime",
    "build_app",
    "current_runtime",
    "freeze_heap",
]
