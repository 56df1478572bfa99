"""Stop requests, who asked them, what was sent, and the acknowledgements.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "optout_requests",
        sa.Column("optout_id", sa.String(64), primary_key=True),
        sa.Column("request_key", sa.String(64), nullable=False, unique=True),
        sa.Column("subject_index", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("institution_code", sa.String(64), nullable=True),
        sa.Column("requester", sa.String(32), nullable=False),
        sa.Column("dispatch_id", sa.String(64), nullable=False, unique=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_optout_requests_subject_index", "optout_requests", ["subject_index"])
    op.create_table(
        "optout_requesters",
        sa.Column("optout_id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(256), primary_key=True),
        sa.Column("requester", sa.String(32), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_optout_requesters_principal", "optout_requesters", ["principal"])
    op.create_table(
        "optout_dispatches",
        sa.Column("dispatch_id", sa.String(64), primary_key=True),
        sa.Column("optout_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_optout_dispatches_optout_id", "optout_dispatches", ["optout_id"])
    op.create_table(
        "optout_acks",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("dispatch_id", sa.String(64), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("matched", sa.Integer, nullable=False),
        sa.Column("purged", sa.JSON, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_optout_acks_dispatch_id", "optout_acks", ["dispatch_id"])


def downgrade() -> None:
    op.drop_table("optout_acks")
    op.drop_table("optout_dispatches")
    op.drop_table("optout_requesters")
    op.drop_table("optout_requests")
