"""The intake service's schema: its own tables plus the shared outbox, inbox and audit log.

Identity never sits in the clear: patient identity, raw resources and submission outcomes
(they name institution-local patient ids) are AES-GCM tokens; lookups go through keyed blind
indexes (`patient_key` = HMAC of `<institution>/<patient id>`, `digest` = HMAC of a
normalized name + birth date).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from kiban_common.db import shared_tables

INSTITUTIONS = "intake_institutions"
NOTICES = "intake_notices"
PATIENTS = "intake_patients"
IDENTITY_KEYS = "intake_identity_keys"
BLOCKS = "intake_blocks"
SUBMISSIONS = "intake_submissions"
RECORDS = "intake_records"

_Key = String(64)  # a hex HMAC-SHA256


def intake_tables(metadata: MetaData) -> None:
    """Add intake's own tables to `metadata` (used by the code and by migration 0002)."""
    Table(
        INSTITUTIONS,
        metadata,
        Column("code", String(64), primary_key=True),
        Column("name", String(256), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("status", String(16), nullable=False),
        Column("registered_at", DateTime(timezone=True), nullable=False),
        Column("suspended_at", DateTime(timezone=True), nullable=True),
    )
    notices = Table(
        NOTICES,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("institution_code", String(64), nullable=False),
        Column("patient_key", _Key, nullable=False),
        Column("notified_on", Date, nullable=False),
        Column("method", String(16), nullable=False),
        Column("guardian_notified", Boolean, nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("patient_key", "notified_on", name="uq_intake_notices_patient_day"),
    )
    Index("ix_intake_notices_institution", notices.c.institution_code)
    patients = Table(
        PATIENTS,
        metadata,
        Column("patient_key", _Key, primary_key=True),
        Column("institution_code", String(64), nullable=False),
        Column("identity", Text, nullable=True),  # encrypted; null once deleted
        # Decided while a minor or held for a renewed notice: checked by GET /notices/due.
        Column("renewal_watch", Boolean, nullable=False),
        Column("opted_out", Boolean, nullable=False),
        Column("optout_id", String(64), nullable=True),
        Column("first_seen_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    Index("ix_intake_patients_watch", patients.c.institution_code, patients.c.renewal_watch)
    keys = Table(
        IDENTITY_KEYS,
        metadata,
        Column("patient_key", _Key, primary_key=True),
        Column("digest", _Key, primary_key=True),
        Column("institution_code", String(64), nullable=False),
    )
    Index("ix_intake_identity_keys_digest", keys.c.digest)
    blocks = Table(
        BLOCKS,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("optout_id", String(64), nullable=False),
        Column("institution_code", String(64), nullable=True),  # null: every institution
        Column("digest", _Key, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("optout_id", "digest", name="uq_intake_blocks_optout_digest"),
    )
    Index("ix_intake_blocks_digest", blocks.c.digest)
    Table(
        SUBMISSIONS,
        metadata,
        Column("id", String(36), primary_key=True),
        Column("institution_code", String(64), nullable=False),
        Column("kind", String(16), nullable=False),  # bundle | bulk
        Column("bundle_type", String(16), nullable=True),
        Column("received_at", DateTime(timezone=True), nullable=False),
        Column("accepted", Integer, nullable=False),
        Column("held", Integer, nullable=False),
        Column("rejected", Integer, nullable=False),
        Column("resource_count", Integer, nullable=False),
        Column("outcome", Text, nullable=False),  # encrypted JSON: the answer, again
        Column("idempotency_key", String(256), nullable=True),
        Column("request_hash", String(64), nullable=True),
        UniqueConstraint(
            "institution_code", "idempotency_key", name="uq_intake_submissions_idempotency"
        ),
    )
    records = Table(
        RECORDS,
        metadata,
        Column("id", String(36), primary_key=True),
        Column("submission_id", String(36), nullable=False),
        Column("institution_code", String(64), nullable=False),
        Column("patient_key", _Key, nullable=False),
        Column("status", String(16), nullable=False),  # accepted | held | dropped
        Column("reason", String(32), nullable=True),
        Column("eligible_on", Date, nullable=True),
        Column("resource_count", Integer, nullable=False),
        Column("identity", Text, nullable=True),  # encrypted; null once deleted
        Column("resources", Text, nullable=True),  # encrypted raw resources; null once deleted
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("released_at", DateTime(timezone=True), nullable=True),
    )
    Index("ix_intake_records_patient", records.c.patient_key)
    Index("ix_intake_records_due", records.c.status, records.c.eligible_on)
    Index("ix_intake_records_submission", records.c.submission_id)


metadata = MetaData()
shared_tables(metadata)
intake_tables(metadata)
