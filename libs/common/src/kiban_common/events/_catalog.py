"""Every event type of CONTRACT.md, registered in the default `REGISTRY`."""

from __future__ import annotations

from kiban_common.events import _models as m
from kiban_common.events._classification import Classification as C
from kiban_common.events._classification import Sealing
from kiban_common.events._registry import EventRegistry, EventSpec

RECORD_RECEIVED = "kiban.intake.record-received.v1"
OPTOUT_REQUESTED = "kiban.optout.optout-requested.v1"
INTAKE_OPTOUT_APPLIED = "kiban.intake.optout-applied.v1"
LINKAGE_OPTOUT_APPLIED = "kiban.linkage.optout-applied.v1"
ANONYMIZER_OPTOUT_APPLIED = "kiban.anonymizer.optout-applied.v1"
RECORD_LINKED = "kiban.linkage.record-linked.v1"
PERSON_PURGED = "kiban.linkage.person-purged.v1"
APPLICATION_DECIDED = "kiban.review.application-decided.v1"
DATASET_REQUESTED = "kiban.release.dataset-requested.v1"
DATASET_BUILT = "kiban.anonymizer.dataset-built.v1"
RELEASE_PUBLISHED = "kiban.release.release-published.v1"
ALERT_RAISED = "kiban.security.alert-raised.v1"

_ALL_SERVICES = frozenset({"intake", "optout", "linkage", "anonymizer", "review", "release"})


def _applied(service: str) -> EventSpec:
    return EventSpec(
        f"kiban.{service}.optout-applied.v1",
        C.PSEUDONYMOUS,
        m.OptoutAppliedV1,
        producers=frozenset({service}),
        consumers=frozenset({"optout"}),
        description=f"{service} has put an opt-out into force",
    )


REGISTRY = EventRegistry(
    [
        EventSpec(
            RECORD_RECEIVED,
            C.IDENTIFIABLE,
            m.RecordReceivedV1,
            producers=frozenset({"intake"}),
            consumers=frozenset({"linkage"}),
            sealing=Sealing.SYMMETRIC,
            description="a patient's records accepted from an institution",
        ),
        EventSpec(
            OPTOUT_REQUESTED,
            C.IDENTIFIABLE,
            m.OptoutRequestedV1,
            producers=frozenset({"optout"}),
            consumers=frozenset({"intake", "linkage"}),
            sealing=Sealing.CORE_PUBLIC_KEY,
            description="a stop or deletion request taken from a patient or a counter",
        ),
        _applied("intake"),
        _applied("linkage"),
        _applied("anonymizer"),
        EventSpec(
            RECORD_LINKED,
            C.PSEUDONYMOUS,
            m.RecordLinkedV1,
            producers=frozenset({"linkage"}),
            consumers=frozenset({"anonymizer"}),
            description="a record joined to a person pseudonym, identifiers stripped",
        ),
        EventSpec(
            PERSON_PURGED,
            C.PSEUDONYMOUS,
            m.PersonPurgedV1,
            producers=frozenset({"linkage"}),
            consumers=frozenset({"anonymizer"}),
            description="a person opted out: remove them from the research store",
        ),
        EventSpec(
            APPLICATION_DECIDED,
            C.PUBLIC,
            m.ApplicationDecidedV1,
            producers=frozenset({"review"}),
            consumers=frozenset({"release"}),
            description="the review committee's decision on an application",
        ),
        EventSpec(
            DATASET_REQUESTED,
            C.PUBLIC,
            m.DatasetRequestedV1,
            producers=frozenset({"release"}),
            consumers=frozenset({"anonymizer"}),
            description="build the dataset of an approved application",
        ),
        EventSpec(
            DATASET_BUILT,
            C.ANONYMOUS,
            m.DatasetBuiltV1,
            producers=frozenset({"anonymizer"}),
            consumers=frozenset({"release"}),
            description="a dataset build finished (or failed) with its privacy report",
        ),
        EventSpec(
            RELEASE_PUBLISHED,
            C.PUBLIC,
            m.ReleasePublishedV1,
            producers=frozenset({"release"}),
            consumers=frozenset(),
            description="a release became ready, was revoked or expired (for internal tools)",
        ),
        EventSpec(
            ALERT_RAISED,
            C.PSEUDONYMOUS,
            m.AlertRaisedV1,
            producers=_ALL_SERVICES,
            consumers=frozenset(),
            description="the access monitor blocked a principal",
        ),
    ]
)
