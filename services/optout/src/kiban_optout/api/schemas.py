"""Request and response bodies of the optout API (CONTRACT.md, plus documented extensions)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kiban_optout.domain.status import Applied, StatusView

_NAME = Field(default=None, max_length=200)


class SubjectIn(BaseModel):
    """The person, as written by the caller; normalized by the service. Every field is text so
    that a wrong value is reported by the service's own rules (which never echo it)."""

    model_config = ConfigDict(extra="forbid")

    family_name: str | None = _NAME
    given_name: str | None = _NAME
    family_name_kana: str | None = _NAME
    given_name_kana: str | None = _NAME
    birth_date: str | None = Field(default=None, max_length=40)
    sex: str | None = Field(default=None, max_length=20)
    postal_code: str | None = Field(default=None, max_length=20)
    institution_patient_id: str | None = Field(default=None, max_length=128)
    # Extension: the date of death, required when the bereaved family asks.
    deceased_on: str | None = Field(default=None, max_length=40)


class OptoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["stop", "stop_and_delete"]
    scope: Literal["all", "institution"] = "all"
    institution_code: str | None = Field(default=None, max_length=64)
    # Extension: may be left out; then `self` for a patient token, `institution_window` for
    # an institution token.
    requester: Literal["self", "guardian", "bereaved_family", "institution_window"] | None = None
    subject: SubjectIn | None = None


class OptoutAccepted(BaseModel):
    optout_id: str
    status: Literal["received", "applying", "applied"]
    received_at: datetime
    # Extensions.
    action: Literal["stop", "stop_and_delete"]
    scope: Literal["all", "institution"]
    outcome: Literal["created", "duplicate", "upgraded"] = Field(
        description="created; duplicate (an earlier request already covers this one, its id "
        "is returned); upgraded (an earlier `stop` became `stop_and_delete`)"
    )


class ServiceApplied(BaseModel):
    at: datetime
    purged: int
    # Extensions.
    purged_by_kind: dict[str, int]
    matched: int
    acknowledgements: int

    @classmethod
    def of(cls, applied: Applied | None) -> ServiceApplied | None:
        if applied is None:
            return None
        return cls(
            at=applied.at,
            purged=applied.purged,
            purged_by_kind=applied.purged_by_kind,
            matched=applied.matched,
            acknowledgements=applied.acknowledgements,
        )


class HistoryEntry(BaseModel):
    action: Literal["stop", "stop_and_delete"]
    sent_at: datetime
    status: Literal["received", "applying", "applied"]


class OptoutStatus(BaseModel):
    status: Literal["received", "applying", "applied"]
    applied: dict[str, ServiceApplied | None]
    matched_persons: int | None
    # Extensions.
    optout_id: str
    action: Literal["stop", "stop_and_delete"]
    scope: Literal["all", "institution"]
    institution_code: str | None
    requester: str
    received_at: datetime
    updated_at: datetime
    applied_at: datetime | None
    history: list[HistoryEntry] = Field(
        default_factory=list, description="every request sent to the core, oldest first"
    )

    @staticmethod
    def applied_of(view: StatusView) -> dict[str, ServiceApplied | None]:
        return {service: ServiceApplied.of(a) for service, a in view.applied.items()}


class OptoutList(BaseModel):
    optouts: list[OptoutStatus]
