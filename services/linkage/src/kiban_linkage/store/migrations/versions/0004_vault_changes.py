"""The vault's change feed and state row: replicas keep their in-memory match index in step
with the vault (see `kiban_linkage.replica`).

Revision ID: 0004
Revises: 0003
"""

from alembic import op
from sqlalchemy import insert, select

from kiban_linkage.store.tables import vault_changes, vault_state

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # 0002 creates every table the code declares: on a fresh database these exist already.
    vault_changes.create(bind, checkfirst=True)
    vault_state.create(bind, checkfirst=True)
    if bind.execute(select(vault_state.c.id)).first() is None:
        bind.execute(insert(vault_state).values(id=1, pruned_through=0, writes=0))


def downgrade() -> None:
    bind = op.get_bind()
    vault_state.drop(bind, checkfirst=True)
    vault_changes.drop(bind, checkfirst=True)
