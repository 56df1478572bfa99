"""The registry of event types: who produces and consumes each, and how sensitive it is."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from kiban_common.events._classification import Classification, Sealing


@dataclass(frozen=True, slots=True)
class EventSpec:
    type: str
    classification: Classification
    data_model: builtins.type[BaseModel]
    producers: frozenset[str]
    consumers: frozenset[str]
    sealing: Sealing = Sealing.NONE
    description: str = ""

    def __post_init__(self) -> None:
        parts = self.type.split(".")
        if len(parts) != 4 or parts[0] != "kiban" or not parts[3].startswith("v"):
            raise ValueError(f"event type {self.type!r} is not kiban.<service>.<event>.v<N>")
        if self.classification is Classification.IDENTIFIABLE and self.sealing is Sealing.NONE:
            raise ValueError(f"identifiable event type {self.type!r} must declare its sealing")

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.data_model.model_json_schema(mode="serialization")
        return schema


class UnknownEventType(KeyError):
    def __str__(self) -> str:
        return f"unknown event type {self.args[0]!r}"


class EventRegistry:
    """A set of event specs by type; the default one is `REGISTRY`."""

    def __init__(self, specs: Iterable[EventSpec] = ()) -> None:
        self._specs: dict[str, EventSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: EventSpec) -> EventSpec:
        if spec.type in self._specs:
            raise ValueError(f"event type {spec.type!r} is registered twice")
        self._specs[spec.type] = spec
        return spec

    def get(self, event_type: str) -> EventSpec:
        try:
            return self._specs[event_type]
        except KeyError:
            raise UnknownEventType(event_type) from None

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._specs

    def __iter__(self) -> Iterator[EventSpec]:
        return iter(sorted(self._specs.values(), key=lambda s: s.type))

    def json_schemas(self) -> dict[str, dict[str, Any]]:
        return {spec.type: spec.json_schema() for spec in self}
