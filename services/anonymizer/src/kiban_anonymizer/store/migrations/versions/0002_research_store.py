"""The research store, purged persons, the purge counter and dataset builds.

Revision ID: 0002
Revises: 0001
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_EVENT_COLUMNS: dict[str, list[tuple[str, Any, bool]]] = {
    "conditions": [
        ("code_system", sa.String(64), False),
        ("code", sa.String(64), False),
        ("onset_date", sa.Date(), True),
        ("recorded_date", sa.Date(), True),
        ("clinical_status", sa.String(64), True),
    ],
    "observations": [
        ("code_system", sa.String(64), False),
        ("code", sa.String(64), False),
        ("effective_date", sa.Date(), True),
        ("value_number", sa.Float(), True),
        ("value_unit", sa.String(64), True),
        ("value_code", sa.String(64), True),
    ],
    "medications": [
        ("code_system", sa.String(64), False),
        ("code", sa.String(64), False),
        ("kind", sa.String(64), True),
        ("authored_on", sa.Date(), True),
    ],
    "allergies": [
        ("code_system", sa.String(64), False),
        ("code", sa.String(64), False),
        ("recorded_date", sa.Date(), True),
        ("criticality", sa.String(64), True),
        ("category", sa.String(64), True),
    ],
    "procedures": [
        ("code_system", sa.String(64), False),
        ("code", sa.String(64), False),
        ("performed_date", sa.Date(), True),
    ],
    "encounters": [
        ("class_code", sa.String(64), True),
        ("start_date", sa.Date(), True),
        ("end_date", sa.Date(), True),
    ],
}


def upgrade() -> None:
    op.create_table(
        "persons",
        sa.Column("pseudonym", sa.String(128), primary_key=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(16), nullable=False),
        sa.Column("postal_code", sa.String(8), nullable=True),
        sa.Column("deceased_on", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    for name, columns in _EVENT_COLUMNS.items():
        op.create_table(
            name,
            sa.Column("id", _BigId, primary_key=True, autoincrement=True),
            sa.Column("person", sa.String(128), nullable=False),
            sa.Column("source", sa.String(64), nullable=False, unique=True),
            sa.Column("institution_code", sa.String(64), nullable=False),
            *(sa.Column(c, t, nullable=n) for c, t, n in columns),
        )
        op.create_index(f"ix_{name}_person", name, ["person"])
    op.create_table(
        "purged_persons",
        sa.Column("pseudonym", sa.String(128), primary_key=True),
        sa.Column("optout_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
    )
    purge_state = op.create_table(
        "purge_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(purge_state, [{"id": 1, "seq": 0}])
    op.create_table(
        "builds",
        sa.Column("build_id", sa.String(64), primary_key=True),
        sa.Column("release_id", sa.String(64), nullable=False, unique=True),
        sa.Column("application_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("report", sa.JSON(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=True),
        sa.Column("purge_reruns", sa.Integer(), nullable=False),
        sa.Column("excluded_after_purge", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_builds_status", "builds", ["status"])


def downgrade() -> None:
    op.drop_index("ix_builds_status", "builds")
    op.drop_table("builds")
    op.drop_table("purge_state")
    op.drop_table("purged_persons")
    for name in reversed(list(_EVENT_COLUMNS)):
        op.drop_index(f"ix_{name}_person", name)
        op.drop_table(name)
    op.drop_table("persons")
