"""Intake's own tables: institutions, notices, patients, identity keys, opt-out blocks,
submissions and records.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
from sqlalchemy import MetaData

from kiban_intake.store.tables import intake_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _metadata() -> MetaData:
    metadata = MetaData()
    intake_tables(metadata)
    return metadata


def upgrade() -> None:
    _metadata().create_all(op.get_bind())


def downgrade() -> None:
    _metadata().drop_all(op.get_bind())
