"""The review service's schema: its own tables plus the shared outbox, inbox and audit log.

Keep in step with `migrations/versions/` (a contract test compares them).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kiban_common.db import shared_tables

metadata = MetaData()
shared_tables(metadata)

_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

members = Table(
    "review_committee_members",
    metadata,
    Column("member_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("expertise", String(32), nullable=False),
    Column("affiliations", JSON, nullable=False),  # as given; compared via organization_key
    Column("created_at", DateTime(timezone=True), nullable=False),
)

certified_users = Table(
    "review_certified_users",
    metadata,
    Column("certification_id", String(32), primary_key=True),
    Column("organization", String(200), nullable=False),
    Column("organization_key", String(200), nullable=False),
    Column("certified_on", Date, nullable=False),
    Column("expires_on", Date, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_review_certified_users_organization_key", "organization_key"),
)

applications = Table(
    "review_applications",
    metadata,
    Column("application_id", String(32), primary_key=True),
    Column("applicant", String(256), nullable=False),  # principal subject, researcher:<id>
    Column("title", String(300), nullable=False),
    Column("organization", String(200), nullable=False),
    Column("organization_key", String(200), nullable=False),
    Column("user_category", String(16), nullable=False),
    Column("purpose", Text, nullable=False),
    Column("scientific_rationale", Text, nullable=False),
    Column("publication_plan", Text, nullable=False),
    Column("funding_and_coi", Text, nullable=False),
    Column("data_items", JSON, nullable=False),
    Column("dataset", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("round", Integer, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),  # first submission
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("decision", String(16), nullable=True),  # latest decision
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("approval_year", Integer, nullable=True),
    Column("approval_seq", Integer, nullable=True),
    Column("approved_on", Date, nullable=True),
    UniqueConstraint("approval_year", "approval_seq", name="uq_review_applications_approval"),
    Index("ix_review_applications_applicant", "applicant", "submitted_at"),
    Index("ix_review_applications_status", "status", "submitted_at"),
    Index("ix_review_applications_decided_at", "decided_at"),
)

# The last approval number given in each year. Taking a number locks the year's row, so
# concurrent approvals queue for numbers instead of racing for them.
approval_counters = Table(
    "review_approval_counters",
    metadata,
    Column("year", Integer, primary_key=True, autoincrement=False),
    Column("last", Integer, nullable=False),
)

transitions = Table(
    "review_transitions",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column(
        "application_id",
        String(32),
        ForeignKey("review_applications.application_id", name="fk_review_transitions_application"),
        nullable=False,
    ),
    Column("round", Integer, nullable=False),
    Column("from_status", String(16), nullable=True),  # null: the first submission
    Column("to_status", String(16), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_review_transitions_application", "application_id", "id"),
)

reviews = Table(
    "review_reviews",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column(
        "application_id",
        String(32),
        ForeignKey("review_applications.application_id", name="fk_review_reviews_application"),
        nullable=False,
    ),
    Column("round", Integer, nullable=False),
    Column(
        "member_id",
        String(64),
        ForeignKey("review_committee_members.member_id", name="fk_review_reviews_member"),
        nullable=False,
    ),
    Column("criteria", JSON, nullable=False),
    Column("vote", String(16), nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("application_id", "round", "member_id", name="uq_review_reviews_member_round"),
)
