"""Request and response bodies of the review API.

Requests forbid unknown fields: a misspelt cohort filter silently ignored would widen the data
released. Validation errors name the field (`body.dataset.resources.2`), never its value.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from kiban_review.domain.rule import Expertise, Vote
from kiban_review.domain.spec import (
    CODE_PATTERN,
    DataItem,
    DatasetKind,
    ResourceType,
    UserCategory,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Prose = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)]
MemberId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
CodePattern = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- committee and certified users ---------------------------------------------------------


class MemberIn(_Strict):
    member_id: MemberId = Field(description="the member's principal is `committee:<member_id>`")
    name: Name
    expertise: Expertise
    affiliations: list[Name] = Field(default_factory=list, max_length=50)


class MemberOut(BaseModel):
    member_id: str
    name: str
    expertise: Expertise
    affiliations: list[str]
    created_at: datetime


class MemberPage(BaseModel):
    items: list[MemberOut]
    total: int
    limit: int
    offset: int


class CertifiedUserIn(_Strict):
    organization: Name
    certified_on: date
    expires_on: date = Field(description="the last day the certification is valid")

    @model_validator(mode="after")
    def _ordered(self) -> CertifiedUserIn:
        if self.expires_on < self.certified_on:
            raise ValueError("expires_on: must not be before certified_on")
        return self


class CertifiedUserOut(BaseModel):
    certification_id: str
    organization: str
    certified_on: date
    expires_on: date
    created_at: datetime


class CertifiedUserPage(BaseModel):
    items: list[CertifiedUserOut]
    total: int
    limit: int
    offset: int


# -- applications ----------------------------------------------------------------------------


class PeriodIn(_Strict):
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> PeriodIn:
        if self.end < self.start:
            raise ValueError("end: must not be before start")
        return self


class CohortIn(_Strict):
    condition_codes: list[CodePattern] = Field(
        default_factory=list,
        max_length=200,
        description="codes, or prefixes ending in one `*` (`I50*`)",
    )
    period: PeriodIn | None = None


class DatasetIn(_Strict):
    kind: DatasetKind
    resources: list[ResourceType] = Field(min_length=1, max_length=7)
    cohort: CohortIn = Field(default_factory=CohortIn)
    k: int = Field(default=5, ge=2, le=1000)
    l: int | None = Field(default=None, ge=2, le=100)  # noqa: E741 — l-diversity's l
    sensitive: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _distinct(self) -> DatasetIn:
        if len(set(self.resources)) != len(self.resources):
            raise ValueError("resources: a resource type is listed twice")
        return self


class ApplicationIn(_Strict):
    title: Title
    organization: Name
    user_category: UserCategory
    purpose: Prose
    scientific_rationale: Prose
    publication_plan: Prose
    funding_and_coi: Prose
    data_items: list[DataItem] = Field(min_length=1, max_length=3)
    dataset: DatasetIn

    @model_validator(mode="after")
    def _distinct(self) -> ApplicationIn:
        if len(set(self.data_items)) != len(self.data_items):
            raise ValueError("data_items: an item is listed twice")
        return self


class ApplicationAccepted(BaseModel):
    application_id: str
    status: str
    round: int
    submitted_at: datetime


class TransitionOut(BaseModel):
    from_status: str | None
    to_status: str
    round: int
    at: datetime
    actor: str | None = Field(default=None, description="shown to the committee and operators")


class ReviewOut(BaseModel):
    review_id: int
    round: int
    member_id: str
    expertise: Expertise
    criteria: dict[str, bool]
    vote: Vote
    comment: str
    created_at: datetime


class Approval(BaseModel):
    no: str
    approved_on: date


class ApplicationOut(BaseModel):
    application_id: str
    status: str
    round: int
    applicant: str
    title: str
    organization: str
    user_category: str
    purpose: str
    scientific_rationale: str
    publication_plan: str
    funding_and_coi: str
    data_items: list[str]
    dataset: dict[str, object]
    submitted_at: datetime
    updated_at: datetime
    decision: str | None
    decided_at: datetime | None
    approval: Approval | None
    transitions: list[TransitionOut]
    reviews: list[ReviewOut] | None = Field(
        default=None, description="committee members and operators only"
    )


class ApplicationSummary(BaseModel):
    application_id: str
    status: str
    round: int
    title: str
    organization: str
    user_category: str
    submitted_at: datetime
    decided_at: datetime | None


class ApplicationPage(BaseModel):
    items: list[ApplicationSummary]
    total: int
    limit: int
    offset: int


# -- reviews and decisions -------------------------------------------------------------------


class Criteria(_Strict):
    purpose: bool
    scientific_validity: bool
    publication_fairness: bool
    benefit_management: bool
    provision_lawful: bool


class ReviewIn(_Strict):
    criteria: Criteria
    vote: Vote
    comment: str = Field(default="", max_length=20_000)


class ReviewAccepted(BaseModel):
    review_id: int
    application_id: str
    round: int
    member_id: str
    vote: Vote
    status: str = Field(description="the application's state after this review")


class DecisionIn(_Strict):
    decision: Literal["approved", "rejected", "revise"] | None = Field(
        default=None,
        validation_alias=AliasChoices("decision", "status"),
        description="omitted: the decision the votes carry; `status` is accepted as a synonym",
    )


class DecisionOut(BaseModel):
    application_id: str
    status: str
    round: int
    decided_at: datetime
    approval: Approval | None


class StatusOut(BaseModel):
    application_id: str
    status: str
    round: int


# -- public register and statistics ---------------------------------------------------------


class RegisterEntry(BaseModel):
    """One row of the public register: these five columns and nothing else."""

    model_config = ConfigDict(extra="forbid")

    no: str
    approved_on: date
    title: str
    data_items: list[str]
    user_category: str


class DecisionTime(BaseModel):
    application_id: str
    decision: str
    submitted_at: datetime
    decided_at: datetime
    days: float


class Stats(BaseModel):
    as_of: datetime
    window_days: int
    decided: int = Field(description="applications whose latest decision is in the window")
    median_days_to_decision: float | None
    applications: list[DecisionTime]
    total: int
    limit: int
    offset: int
