"""The six services as the CLI knows them: definition, settings class and app factory."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from kiban_anonymizer import main as anonymizer
from kiban_anonymizer.settings import AnonymizerSettings
from kiban_common.service import ServiceDefinition
from kiban_common.settings import KibanSettings
from kiban_intake import main as intake
from kiban_intake.settings import IntakeSettings
from kiban_linkage import main as linkage
from kiban_linkage.settings import LinkageSettings
from kiban_optout import main as optout
from kiban_optout.settings import OptoutSettings
from kiban_release import main as release
from kiban_release.settings import ReleaseSettings
from kiban_review import main as review
from kiban_review.settings import ReviewSettings


@dataclass(frozen=True)
class Service:
    definition: ServiceDefinition
    settings: type[KibanSettings]
    create_app: Callable[..., FastAPI]
    port: int

    @property
    def name(self) -> str:
        return self.definition.name


def _service(module: Any, settings: type[KibanSettings]) -> Service:
    port = settings.model_fields["http"].get_default(call_default_factory=True).port
    return Service(module.DEFINITION, settings, module.create_app, port)


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        _service(intake, IntakeSettings),
        _service(optout, OptoutSettings),
        _service(linkage, LinkageSettings),
        _service(anonymizer, AnonymizerSettings),
        _service(review, ReviewSettings),
        _service(release, ReleaseSettings),
    )
}
