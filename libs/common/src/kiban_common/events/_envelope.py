"""The CloudEvents 1.0 envelope every Kiban event travels in, and its Kafka wire form.

Structured content mode: the whole event (attributes and data) is one JSON document in the Kafka
message value; the message key is the `partitionkey` extension (a person pseudonym or an aggregate
id) so one person's events stay in order; W3C `traceparent` rides both as a CloudEvents extension
(distributed tracing extension) and as a Kafka header for tooling that only reads headers.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from cloudevents.core.bindings.kafka import to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel

DataT = TypeVar("DataT", bound=BaseModel)

_FORMAT = JSONFormat()
TRACEPARENT = "traceparent"


@dataclass(frozen=True, slots=True)
class Event(Generic[DataT]):
    """One event: the typed data plus the CloudEvents attributes Kiban uses."""

    type: str
    source: str
    key: str
    data: DataT = field(repr=False)  # data never goes into a log line by repr
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class WireMessage:
    """What goes over the transport: bytes, as Kafka holds them."""

    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    def header(self, name: str) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class MalformedEvent(ValueError):
    """The bytes are not a Kiban CloudEvent (or its data does not fit the declared schema)."""


def encode(event: Event[Any]) -> WireMessage:
    attributes: dict[str, Any] = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": event.time,
        "datacontenttype": "application/json",
        "partitionkey": event.key,
    }
    if event.subject is not None:
        attributes["subject"] = event.subject
    if event.traceparent is not None:
        attributes[TRACEPARENT] = event.traceparent
    ce = CloudEvent(attributes, event.data.model_dump(mode="json"))
    message = to_structured(ce, _FORMAT)
    headers = [(name, value) for name, value in message.headers.items()]
    headers.append(("ce_type", event.type.encode()))
    if event.traceparent is not None:
        headers.append((TRACEPARENT, event.traceparent.encode()))
    return WireMessage(
        topic=event.type, key=event.key.encode(), value=message.value, headers=tuple(headers)
    )


def read_type(message: WireMessage) -> str | None:
    """The event type without parsing the body (the `ce_type` header, else the topic)."""
    raw = message.header("ce_type")
    return raw.decode(errors="replace") if raw is not None else message.topic


def decode(message: WireMessage, data_model: type[DataT]) -> Event[DataT]:
    """Read a structured-mode CloudEvent that carries JSON data.

    Written by the SDK, read here: the SDK's reader parses every timestamp with dateutil and
    was a third of a consumer's time per event, so this reader checks just what Kiban relies
    on (spec version 1.0; non-empty `id`, `source`, `type`; RFC 3339 `time`; a JSON object as
    `data`). `tests` cross-check it against the SDK's reading of the same bytes.
    """
    try:
        document = json.loads(message.value)
    except ValueError:
        raise MalformedEvent("not a CloudEvents JSON document") from None
    if not isinstance(document, dict) or document.get("specversion") != "1.0":
        raise MalformedEvent("not a CloudEvents 1.0 document")
    attributes = {name: document.get(name) for name in ("id", "source", "type")}
    for name, value in attributes.items():
        if not isinstance(value, str) or not value:
            raise MalformedEvent(f"CloudEvents attribute {name!r} is missing or empty")
    event_id = str(attributes["id"])
    raw_data = document.get("data")
    if not isinstance(raw_data, dict):
        raise MalformedEvent(f"event {event_id} has no JSON object as data")
    time = _time(document.get("time"), event_id)
    try:
        data = data_model.model_validate(raw_data)
    except ValueError as exc:
        # pydantic's message would echo field values; report only where it failed.
        raise MalformedEvent(
            f"event {event_id} data does not fit {data_model.__name__}: {_locations(exc)}"
        ) from None
    key = document.get("partitionkey")
    return Event(
        type=str(attributes["type"]),
        source=str(attributes["source"]),
        key=str(key) if key is not None else message.key.decode(errors="replace"),
        data=data,
        id=event_id,
        time=time,
        subject=_optional_str(document.get("subject")),
        traceparent=_optional_str(document.get(TRACEPARENT)),
    )


def _time(value: object, event_id: str) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise MalformedEvent(f"event {event_id} has a time that is not RFC 3339") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _locations(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors is None:
        return type(exc).__name__
    return ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['type']})" for e in errors()[:5])
