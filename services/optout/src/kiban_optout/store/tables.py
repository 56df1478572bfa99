"""The optout service's schema: its own tables plus the shared outbox, inbox and audit log.

Identity is stored only encrypted (`optout_requests.subject`, AES-256-GCM) with keyed-hash blind
indexes beside it: `request_key` (subject + scope, unique: one request per person and scope) and
`subject_index` (subject alone: a patient finds the requests about them).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Integer, MetaData, String, Table, Text

from kiban_common.db import shared_tables

metadata = MetaData()
shared_tables(metadata)

requests = Table(
    "optout_requests",
    metadata,
    Column("optout_id", String(64), primary_key=True),
    Column("request_key", String(64), nullable=False, unique=True),
    Column("subject_index", String(64), nullable=False, index=True),
    Column("subject", Text, nullable=False),
    Column("action", String(16), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("institution_code", String(64), nullable=True),
    Column("requester", String(32), nullable=False),
    # The id on the wire now: the optout id itself, or a fresh id once an upgrade to
    # `stop_and_delete` was sent (acknowledgements of the earlier `stop` stay apart).
    Column("dispatch_id", String(64), nullable=False, unique=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every principal that asked for a request (the first one and any duplicate); they may read it.
requesters = Table(
    "optout_requesters",
    metadata,
    Column("optout_id", String(64), primary_key=True),
    Column("principal", String(256), primary_key=True),
    Column("requester", String(32), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
)
Index("ix_optout_requesters_principal", requesters.c.principal)

# Each `optout-requested` sent: its id on the wire and the action it carried.
dispatches = Table(
    "optout_dispatches",
    metadata,
    Column("dispatch_id", String(64), primary_key=True),
    Column("optout_id", String(64), nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("dispatched_at", DateTime(timezone=True), nullable=False),
)

# `optout-applied` acknowledgements, one row per event (kept even for an unknown id).
acks = Table(
    "optout_acks",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("dispatch_id", String(64), nullable=False, index=True),
    Column("service", String(16), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Column("matched", Integer, nullable=False),
    Column("purged", JSON, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)
