"""The review service's tables: committee, certified users, applications, their transitions
and reviews.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_committee_members",
        sa.Column("member_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("expertise", sa.String(32), nullable=False),
        sa.Column("affiliations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "review_certified_users",
        sa.Column("certification_id", sa.String(32), primary_key=True),
        sa.Column("organization", sa.String(200), nullable=False),
        sa.Column("organization_key", sa.String(200), nullable=False),
        sa.Column("certified_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_review_certified_users_organization_key",
        "review_certified_users",
        ["organization_key"],
    )
    op.create_table(
        "review_applications",
        sa.Column("application_id", sa.String(32), primary_key=True),
        sa.Column("applicant", sa.String(256), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("organization", sa.String(200), nullable=False),
        sa.Column("organization_key", sa.String(200), nullable=False),
        sa.Column("user_category", sa.String(16), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("scientific_rationale", sa.Text(), nullable=False),
        sa.Column("publication_plan", sa.Text(), nullable=False),
        sa.Column("funding_and_coi", sa.Text(), nullable=False),
        sa.Column("data_items", sa.JSON(), nullable=False),
        sa.Column("dataset", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decision", sa.String(16), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval_year", sa.Integer(), nullable=True),
        sa.Column("approval_seq", sa.Integer(), nullable=True),
        sa.Column("approved_on", sa.Date(), nullable=True),
        sa.UniqueConstraint(
            "approval_year", "approval_seq", name="uq_review_applications_approval"
        ),
    )
    op.create_index(
        "ix_review_applications_applicant", "review_applications", ["applicant", "submitted_at"]
    )
    op.create_index(
        "ix_review_applications_status", "review_applications", ["status", "submitted_at"]
    )
    op.create_index("ix_review_applications_decided_at", "review_applications", ["decided_at"])
    op.create_table(
        "review_approval_counters",
        sa.Column("year", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("last", sa.Integer(), nullable=False),
    )
    op.create_table(
        "review_transitions",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("application_id", sa.String(32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["review_applications.application_id"],
            name="fk_review_transitions_application",
        ),
    )
    op.create_index(
        "ix_review_transitions_application", "review_transitions", ["application_id", "id"]
    )
    op.create_table(
        "review_reviews",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("application_id", sa.String(32), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(64), nullable=False),
        sa.Column("criteria", sa.JSON(), nullable=False),
        sa.Column("vote", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["review_applications.application_id"],
            name="fk_review_reviews_application",
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["review_committee_members.member_id"],
            name="fk_review_reviews_member",
        ),
        sa.UniqueConstraint(
            "application_id", "round", "member_id", name="uq_review_reviews_member_round"
        ),
    )


def downgrade() -> None:
    op.drop_table("review_reviews")
    op.drop_table("review_transitions")
    op.drop_table("review_approval_counters")
    op.drop_index("ix_review_applications_decided_at", "review_applications")
    op.drop_index("ix_review_applications_status", "review_applications")
    op.drop_index("ix_review_applications_applicant", "review_applications")
    op.drop_table("review_applications")
    op.drop_index("ix_review_certified_users_organization_key", "review_certified_users")
    op.drop_table("review_certified_users")
    op.drop_table("review_committee_members")
