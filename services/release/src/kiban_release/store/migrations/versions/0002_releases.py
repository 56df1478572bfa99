"""The release service's tables: releases, their files, person-id index and download log.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("decision_event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("application_id", sa.String(64), nullable=False),
        sa.Column("applicant", sa.String(128), nullable=True),
        sa.Column("organization", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("dataset", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("build_id", sa.String(64), nullable=True),
        sa.Column("privacy", sa.JSON, nullable=True),
        sa.Column("manifest", sa.JSON, nullable=True),
        sa.Column("fee", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_releases_application_id", "releases", ["application_id"])
    op.create_index("ix_releases_applicant", "releases", ["applicant"])
    op.create_index("ix_releases_status_expires_at", "releases", ["status", "expires_at"])
    op.create_table(
        "release_files",
        sa.Column("release_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
    )
    op.create_index("ix_release_files_sha256", "release_files", ["sha256"])
    op.create_table(
        "release_persons",
        sa.Column("person_id", sa.String(128), primary_key=True),
        sa.Column("release_id", sa.String(36), primary_key=True),
    )
    op.create_table(
        "release_downloads",
        sa.Column("id", _BigId, primary_key=True, autoincrement=True),
        sa.Column("release_id", sa.String(36), nullable=False),
        sa.Column("file_name", sa.String(255), nullable=False),
        sa.Column("principal", sa.String(128), nullable=False),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("completed", sa.Boolean, nullable=False),
        sa.Column("sha256_ok", sa.Boolean, nullable=True),
    )
    op.create_index(
        "ix_release_downloads_release_file_principal",
        "release_downloads",
        ["release_id", "file_name", "principal"],
    )


def downgrade() -> None:
    op.drop_table("release_downloads")
    op.drop_table("release_persons")
    op.drop_table("release_files")
    op.drop_table("releases")
