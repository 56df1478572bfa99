from __future__ import annotations

import pytest

from kiban_common.events import (
    REGISTRY,
    Classification,
    EventData,
    EventSpec,
    Sealing,
    Zone,
    may_consume,
    may_publish,
)
from kiban_common.service import ServiceDefinition  # noqa: F401 - the runtime imports cleanly

SERVICE_ZONES = {
    "intake": Zone.CORE,
    "linkage": Zone.CORE,
    "anonymizer": Zone.CORE,
    "optout": Zone.INFORMATION,
    "review": Zone.INFORMATION,
    "release": Zone.INFORMATION,
}


@pytest.mark.parametrize("classification", list(Classification))
def test_core_zone_consumes_every_classification(classification: Classification) -> None:
    assert may_consume(Zone.CORE, classification)


def test_information_zone_never_consumes_identifiable_data() -> None:
    assert not may_consume(Zone.INFORMATION, Classification.IDENTIFIABLE)
    assert may_consume(Zone.INFORMATION, Classification.PSEUDONYMOUS)


def test_information_zone_publishes_identifiable_data_only_sealed_to_the_core() -> None:
    assert may_publish(Zone.INFORMATION, Classification.IDENTIFIABLE, Sealing.CORE_PUBLIC_KEY)
    assert not may_publish(Zone.INFORMATION, Classification.IDENTIFIABLE, Sealing.SYMMETRIC)


def test_every_declared_producer_and_consumer_is_allowed_by_its_zone() -> None:
    for spec in REGISTRY:
        for producer in spec.producers:
            assert may_publish(SERVICE_ZONES[producer], spec.classification, spec.sealing), (
                spec.type
            )
        for consumer in spec.consumers:
            assert may_consume(SERVICE_ZONES[consumer], spec.classification), spec.type


def test_identifiable_type_without_sealing_is_refused_at_registration() -> None:
    with pytest.raises(ValueError, match="sealing"):
        EventSpec(
            "kiban.x.leak.v1",
            Classification.IDENTIFIABLE,
            EventData,
            producers=frozenset(),
            consumers=frozenset(),
        )


def test_type_name_must_follow_the_convention() -> None:
    with pytest.raises(ValueError, match=r"kiban\.<service>"):
        EventSpec(
            "leak", Classification.PUBLIC, EventData, producers=frozenset(), consumers=frozenset()
        )
