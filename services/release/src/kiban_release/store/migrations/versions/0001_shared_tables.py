"""The shared tables: outbox, processed events, append-only audit log.

Revision ID: 0001
Revises:
"""

from alembic import op

from kiban_common.db import create_shared_tables, drop_shared_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_shared_tables(op.get_bind())


def downgrade() -> None:
    drop_shared_tables(op.get_bind())
