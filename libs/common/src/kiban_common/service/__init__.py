"""Wiring shared by every service: definition, runtime (lifespan resources) and app factory."""

from kiban_common.service._app import build_app
from kiban_common.service._definition import ServiceDefinition
from kiban_common.service._runtime import ServiceRuntime

__all__ = ["ServiceDefinition", "ServiceRuntime", "build_app"]
