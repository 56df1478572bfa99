"""The linkage tables: persons, identity vault, blind indexes, possible links, blocks, opt-out
reviews, models and the operator log (append-only).

Revision ID: 0002
Revises: 0001
"""

from alembic import op
from sqlalchemy import MetaData

from kiban_common.security import append_only_ddl
from kiban_linkage.store.tables import OPERATOR_LOG, metadata

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SHARED = ("kiban_outbox", "kiban_processed_events", "kiban_audit_log")


def _own() -> MetaData:
    own = MetaData()
    for table in metadata.sorted_tables:
        if table.name not in _SHARED:
            table.to_metadata(own)
    return own


def upgrade() -> None:
    bind = op.get_bind()
    _own().create_all(bind)
    for statement in append_only_ddl(OPERATOR_LOG, bind.dialect.name):
        op.execute(statement)


def downgrade() -> None:
    _own().drop_all(op.get_bind())
