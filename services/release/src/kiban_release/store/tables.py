"""The release service's schema: its own tables plus the shared outbox, inbox and audit log.

- `releases`: one row per approval (keyed by the decision event, so a redelivered decision
  never makes a second release), its status, privacy report, signed manifest and fee statement.
- `release_files`: the files of a ready release, verified against their SHA-256.
- `release_persons`: every distinct `person_id` of a ready release's files, for `trace`.
- `release_downloads`: every download (who, when, from where, bytes sent, whether complete).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from kiban_common.db import shared_tables

metadata = MetaData()
shared_tables(metadata)

_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

releases = Table(
    "releases",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("decision_event_id", String(64), nullable=False, unique=True),
    Column("application_id", String(64), nullable=False, index=True),
    Column("applicant", String(128), nullable=True, index=True),
    Column("organization", String(256), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("dataset", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(500), nullable=True),
    Column("build_id", String(64), nullable=True),
    Column("privacy", JSON, nullable=True),
    Column("manifest", JSON, nullable=True),
    Column("fee", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("ready_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("ended_by", String(128), nullable=True),
)
Index("ix_releases_status_expires_at", releases.c.status, releases.c.expires_at)

release_files = Table(
    "release_files",
    metadata,
    Column("release_id", String(36), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("sha256", String(64), nullable=False, index=True),
    Column("bytes", BigInteger, nullable=False),
    Column("path", String(1024), nullable=False),
)

release_persons = Table(
    "release_persons",
    metadata,
    Column("person_id", String(128), primary_key=True),
    Column("release_id", String(36), primary_key=True),
)

release_downloads = Table(
    "release_downloads",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("release_id", String(36), nullable=False),
    Column("file_name", String(255), nullable=False),
    Column("principal", String(128), nullable=False),
    Column("source", String(64), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("bytes", BigInteger, nullable=False),
    Column("completed", Boolean, nullable=False),
    Column("sha256_ok", Boolean, nullable=True),
)
Index(
    "ix_release_downloads_release_file_principal",
    release_downloads.c.release_id,
    release_downloads.c.file_name,
    release_downloads.c.principal,
)
