"""The data of every event type in CONTRACT.md: one versioned model per type.

These models are the contract between services: their JSON Schemas are snapshotted in
`tests/contract/` and a change that would break a consumer fails there. A breaking change gets a
new type (`...v2`), never an edit of a published one.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kiban_common.events._fields import Code, Encrypted, Pseudonym, Sealed


class EventData(BaseModel):
    """Base of every event data model: unknown fields are kept (a newer producer may add
    optional fields) and values are immutable once built."""

    model_config = ConfigDict(frozen=True, extra="allow")


class RecordReceivedV1(EventData):
    """A patient's records accepted by intake. Identity and resources are encrypted with the
    core zone's field keys; only core services can open them."""

    submission_id: Code
    institution_code: Code
    received_at: datetime
    resource_count: int = Field(ge=0)
    identity: Encrypted
    resources: Encrypted


class OptoutRequestedV1(EventData):
    """A stop (or stop-and-delete) request, with the subject sealed to the core's public key."""

    optout_id: Code
    action: Literal["stop", "stop_and_delete"]
    scope: Literal["all", "institution"]
    institution_code: Code | None = None
    requester: Literal["self", "guardian", "bereaved_family", "institution_window"]
    requested_at: datetime
    subject: Sealed


class OptoutAppliedV1(EventData):
    """One core service's acknowledgement that an opt-out is in force there."""

    optout_id: Code
    service: Literal["intake", "linkage", "anonymizer"]
    applied_at: datetime
    matched: int = Field(ge=0, description="persons or patients the request matched")
    purged: dict[str, int] = Field(
        default_factory=dict, description="rows removed or dropped, by kind"
    )


class Demographics(EventData):
    """The quasi-identifiers the anonymizer generalizes; never names or identifiers."""

    birth_date: date | None = None
    sex: Literal["male", "female", "other", "unknown"] = "unknown"
    postal_code: str | None = Field(default=None, pattern=r"^\d{3}(-?\d{4})?$")
    deceased_on: date | None = None


class RecordLinkedV1(EventData):
    """A record joined to a person, with clinical resources stripped of identifiers."""

    person: Pseudonym
    institution_code: Code
    submission_id: Code
    linked_at: datetime
    demographics: Demographics
    resources: list[dict[str, object]] = Field(default_factory=list)
    merged_from: list[Pseudonym] = Field(
        default_factory=list, description="pseudonyms this person absorbed in a merge"
    )


class PersonPurgedV1(EventData):
    person: Pseudonym
    optout_id: Code
    action: Literal["stop", "stop_and_delete"]


class Period(EventData):
    start: date
    end: date


class Cohort(EventData):
    condition_codes: list[str] = Field(default_factory=list)
    period: Period | None = None


class DatasetSpec(EventData):
    kind: Literal["anonymized", "pseudonymized"]
    resources: list[str]
    cohort: Cohort = Field(default_factory=Cohort)
    k: int = Field(default=5, ge=2)
    l: int | None = Field(default=None, ge=2)  # noqa: E741 — the l of l-diversity
    sensitive: str | None = None


class ApplicationDecidedV1(EventData):
    application_id: Code
    decision: Literal["approved", "rejected", "revise"]
    decided_at: datetime
    organization: str
    user_category: Literal["academia", "industry", "government"]
    dataset: DatasetSpec
    applicant: Code | None = Field(
        default=None, description="principal that applied (`researcher:<id>`), who may download"
    )


class DatasetRequestedV1(EventData):
    release_id: Code
    application_id: Code
    requested_at: datetime
    dataset: DatasetSpec


class BuiltFile(EventData):
    name: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    uri: str | None = None


class PrivacySummary(EventData):
    k: int
    achieved_k: int | None = None
    l: int | None = None  # noqa: E741
    achieved_l: int | None = None
    suppressed: int = 0


class DatasetBuiltV1(EventData):
    release_id: Code
    build_id: Code
    status: Literal["ready", "failed"]
    reason: str | None = None
    files: list[BuiltFile] = Field(default_factory=list)
    privacy: PrivacySummary | None = None


class PublishedFile(EventData):
    name: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ReleasePublishedV1(EventData):
    release_id: Code
    application_id: Code
    kind: Literal["anonymized", "pseudonymized"]
    status: Literal["ready", "revoked", "expired"]
    files: list[PublishedFile] = Field(default_factory=list)
    expires_at: datetime | None = None


class AlertRaisedV1(EventData):
    service: str
    principal: str
    rule: str
    action: Literal["blocked"]
    at: datetime
