"""Who may handle which data: event classifications and the two zones of the Basic Policy.

The Basic Policy separates core systems (基幹業務系), which hold identifiable data and have no
route to open networks, from information systems (情報系), which face the internet and must never
hold identifiable data in the clear. Every event type carries a classification; every service
sits in one zone. The rules here are the only place that decides what crosses between them.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Zone(StrEnum):
    CORE = "core"
    INFORMATION = "information"


class Classification(StrEnum):
    """How sensitive an event's data is, from least to most."""

    PUBLIC = "public"
    ANONYMOUS = "anonymous"
    PSEUDONYMOUS = "pseudonymous"
    IDENTIFIABLE = "identifiable"

    @property
    def rank(self) -> int:
        return _RANK[self]


class Sealing(StrEnum):
    """How the identifiable parts of an event's data are encrypted.

    `symmetric`: with the core zone's field keys (only core services can read or write it).
    `core_public_key`: sealed to the core zone's public key, so a service in the information
    zone can write it (an opt-out taken from a patient) but can never read it back.
    """

    NONE = "none"
    SYMMETRIC = "symmetric"
    CORE_PUBLIC_KEY = "core_public_key"


class _Rank(IntEnum):
    PUBLIC = 0
    ANONYMOUS = 1
    PSEUDONYMOUS = 2
    IDENTIFIABLE = 3


_RANK = {
    Classification.PUBLIC: _Rank.PUBLIC,
    Classification.ANONYMOUS: _Rank.ANONYMOUS,
    Classification.PSEUDONYMOUS: _Rank.PSEUDONYMOUS,
    Classification.IDENTIFIABLE: _Rank.IDENTIFIABLE,
}

# The most sensitive classification a zone may read (consume).
_CONSUME_CEILING = {
    Zone.CORE: Classification.IDENTIFIABLE,
    Zone.INFORMATION: Classification.PSEUDONYMOUS,
}


class ZoneViolation(Exception):
    """Raised when a service would move an event its zone is not allowed to handle.

    The message names the event type, its classification and the zone — never the data.
    """

    def __init__(self, *, zone: Zone, event_type: str, classification: Classification, verb: str):
        self.zone = zone
        self.event_type = event_type
        self.classification = classification
        self.verb = verb
        super().__init__(
            f"the {zone.value} zone may not {verb} {event_type!r} "
            f"(classified {classification.value})"
        )


def may_consume(zone: Zone, classification: Classification) -> bool:
    return classification.rank <= _CONSUME_CEILING[zone].rank


def may_publish(zone: Zone, classification: Classification, sealing: Sealing) -> bool:
    """The core zone publishes anything; the information zone publishes identifiable data only
    when it is sealed to the core's public key, which the information zone cannot open."""
    if zone is Zone.CORE:
        return True
    if classification is Classification.IDENTIFIABLE:
        return sealing is Sealing.CORE_PUBLIC_KEY
    return True
