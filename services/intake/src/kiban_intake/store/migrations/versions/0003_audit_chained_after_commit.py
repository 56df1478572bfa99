"""The audit log is chained after commit: entries are plain inserts with the change they record,
and the service's chainer links them (seq, prev_hash, hash) in one short transaction per batch.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from kiban_common.db import chain_audit_after_commit, unchain_audit_after_commit

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    chain_audit_after_commit(op)


def downgrade() -> None:
    unchain_audit_after_commit(op)
