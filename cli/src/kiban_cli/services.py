"""The six services as the CLI knows them: definition, settings class and app factory.

A service's package is imported the first time its entry is read (`SERVICES["review"]`), not
when the CLI starts: every `kiban` process would otherwise import all six (pandas among them,
through the anonymizer) even for `kiban token`. The names are listed here, so iterating, `in`
and `len` import nothing; `deploy/tests/test_image_start.py` checks that each name is the one its
definition declares, and which services each command imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kiban_common.service import ServiceDefinition
    from kiban_common.settings import KibanSettings

# name -> settings class in `kiban_<name>.settings`; `kiban_<name>.main` has DEFINITION and
# create_app. The order is the one `kiban dev` starts them in and help texts list them in.
_SETTINGS: dict[str, str] = {
    "intake": "IntakeSettings",
    "optout": "OptoutSettings",
    "linkage": "LinkageSettings",
    "anonymizer": "AnonymizerSettings",
    "review": "ReviewSettings",
    "release": "ReleaseSettings",
}
SERVICE_NAMES: tuple[str, ...] = tuple(_SETTINGS)


@dataclass(frozen=True)
class Service:
    definition: ServiceDefinition
    settings: type[KibanSettings]
    create_app: Callable[..., FastAPI]
    port: int

    @property
    def name(self) -> str:
        return self.definition.name


@cache
def load_service(name: str) -> Service:
    """Import one service (its app, routers, store and domain) and describe it."""
    if name not in _SETTINGS:
        raise KeyError(name)
    module = importlib.import_module(f"kiban_{name}.main")
    settings: type[KibanSettings] = getattr(
        importlib.import_module(f"kiban_{name}.settings"), _SETTINGS[name]
    )
    port = settings.model_fields["http"].get_default(call_default_factory=True).port
    return Service(module.DEFINITION, settings, module.create_app, port)


class _Services(Mapping[str, Service]):
    """A read-only mapping name -> Service that imports a service when its value is read."""

    def __getitem__(self, name: str) -> Service:
        return load_service(name)

    def __contains__(self, name: object) -> bool:
        return name in _SETTINGS

    def __iter__(self) -> Iterator[str]:
        return iter(SERVICE_NAMES)

    def __len__(self) -> int:
        return len(SERVICE_NAMES)

    def __repr__(self) -> str:
        return f"<kiban services {', '.join(SERVICE_NAMES)}>"


SERVICES: Mapping[str, Service] = _Services()
