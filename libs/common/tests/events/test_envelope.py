from __future__ import annotations

import json

import pytest

from kiban_common.events import (
    PERSON_PURGED,
    REGISTRY,
    Event,
    MalformedEvent,
    PersonPurgedV1,
    WireMessage,
    decode,
    encode,
)

PERSON = "p" * 24


def _purged() -> Event[PersonPurgedV1]:
    return Event(
        type=PERSON_PURGED,
        source="/kiban/linkage",
        key=PERSON,
        data=PersonPurgedV1(person=PERSON, optout_id="o-1", action="stop"),
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_encoded_event_is_structured_cloudevent_keyed_by_partition_key() -> None:
    wire = encode(_purged())
    body = json.loads(wire.value)
    assert body["specversion"] == "1.0"
    assert body["type"] == PERSON_PURGED
    assert body["partitionkey"] == PERSON
    assert body["data"]["optout_id"] == "o-1"
    assert wire.topic == PERSON_PURGED
    assert wire.key == PERSON.encode()
    assert wire.header("content-type") == b"application/cloudevents+json"
    assert wire.header("traceparent") is not None


def test_decode_round_trips_every_attribute() -> None:
    event = _purged()
    back = decode(encode(event), PersonPurgedV1)
    assert back == event


def test_decode_rejects_data_that_does_not_fit_the_schema_without_echoing_values() -> None:
    wire = encode(_purged())
    body = json.loads(wire.value)
    body["data"]["action"] = "山田太郎"  # a value that must never appear in an error
    bad = WireMessage(
        topic=wire.topic, key=wire.key, value=json.dumps(body).encode(), headers=wire.headers
    )
    with pytest.raises(MalformedEvent) as raised:
        decode(bad, PersonPurgedV1)
    assert "action" in str(raised.value)
    assert "山田" not in str(raised.value)


def test_decode_rejects_bytes_that_are_not_json() -> None:
    with pytest.raises(MalformedEvent):
        decode(WireMessage(topic="t", key=b"k", value=b"\xff{"), PersonPurgedV1)


def test_event_repr_never_shows_data() -> None:
    assert "o-1" not in repr(_purged())


def test_registry_holds_every_contract_type_once() -> None:
    types = {spec.type for spec in REGISTRY}
    assert types == {
        "kiban.intake.record-received.v1",
        "kiban.optout.optout-requested.v1",
        "kiban.intake.optout-applied.v1",
        "kiban.linkage.optout-applied.v1",
        "kiban.anonymizer.optout-applied.v1",
        "kiban.linkage.record-linked.v1",
        "kiban.linkage.person-purged.v1",
        "kiban.review.application-decided.v1",
        "kiban.release.dataset-requested.v1",
        "kiban.anonymizer.dataset-built.v1",
        "kiban.release.release-published.v1",
        "kiban.security.alert-raised.v1",
    }


def test_reader_agrees_with_the_cloudevents_sdk_on_what_the_sdk_wrote() -> None:
    from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    wire = encode(_purged())
    sdk = from_structured(
        KafkaMessage(headers=dict(wire.headers), key=wire.key, value=wire.value),
        JSONFormat(),
        CloudEvent,
    )
    ours = decode(wire, PersonPurgedV1)
    assert (ours.id, ours.source, ours.type, ours.time, ours.key, ours.traceparent) == (
        sdk.get_id(),
        sdk.get_source(),
        sdk.get_type(),
        sdk.get_time(),
        sdk.get_extension("partitionkey"),
        sdk.get_extension("traceparent"),
    )
    assert ours.data.model_dump(mode="json") == sdk.get_data()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"specversion": "0.3"}, "CloudEvents 1.0"),
        ({"id": ""}, "'id'"),
        ({"source": None}, "'source'"),
        ({"time": "yesterday"}, "RFC 3339"),
        ({"data": "a string"}, "JSON object"),
    ],
)
def test_reader_refuses_documents_that_are_not_kiban_cloudevents(
    change: dict[str, object], complaint: str
) -> None:
    wire = encode(_purged())
    body = {**json.loads(wire.value), **change}
    bad = WireMessage(topic=wire.topic, key=wire.key, value=json.dumps(body).encode())
    with pytest.raises(MalformedEvent, match=complaint):
        decode(bad, PersonPurgedV1)
