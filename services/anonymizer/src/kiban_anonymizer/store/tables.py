"""The anonymizer service's schema: the research store, purges, builds, and the shared tables.

The research store is keyed by person pseudonym (`person`) and holds only codes, dates, numbers
and status codes (no names, identifiers or free text ever reach it). Every event row has a
`source` digest, unique, so a record delivered again replaces its row.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
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


def _code() -> String:
    return String(64)


persons = Table(
    "persons",
    metadata,
    Column("pseudonym", String(128), primary_key=True),
    Column("birth_date", Date, nullable=True),
    Column("sex", String(16), nullable=False),
    Column("postal_code", String(8), nullable=True),
    Column("deceased_on", Date, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _event_table(name: str, *columns: Column[object]) -> Table:
    table = Table(
        name,
        metadata,
        Column("id", _BigId, primary_key=True, autoincrement=True),
        Column("person", String(128), nullable=False),
        Column("source", String(64), nullable=False, unique=True),
        Column("institution_code", String(64), nullable=False),
        *columns,
    )
    Index(f"ix_{name}_person", table.c.person)
    return table


conditions = _event_table(
    "conditions",
    Column("code_system", _code(), nullable=False),
    Column("code", _code(), nullable=False),
    Column("onset_date", Date, nullable=True),
    Column("recorded_date", Date, nullable=True),
    Column("clinical_status", _code(), nullable=True),
)
observations = _event_table(
    "observations",
    Column("code_system", _code(), nullable=False),
    Column("code", _code(), nullable=False),
    Column("effective_date", Date, nullable=True),
    Column("value_number", Float, nullable=True),
    Column("value_unit", _code(), nullable=True),
    Column("value_code", _code(), nullable=True),
)
medications = _event_table(
    "medications",
    Column("code_system", _code(), nullable=False),
    Column("code", _code(), nullable=False),
    Column("kind", _code(), nullable=True),
    Column("authored_on", Date, nullable=True),
)
allergies = _event_table(
    "allergies",
    Column("code_system", _code(), nullable=False),
    Column("code", _code(), nullable=False),
    Column("recorded_date", Date, nullable=True),
    Column("criticality", _code(), nullable=True),
    Column("category", _code(), nullable=True),
)
procedures = _event_table(
    "procedures",
    Column("code_system", _code(), nullable=False),
    Column("code", _code(), nullable=False),
    Column("performed_date", Date, nullable=True),
)
encounters = _event_table(
    "encounters",
    Column("class_code", _code(), nullable=True),
    Column("start_date", Date, nullable=True),
    Column("end_date", Date, nullable=True),
)

EVENT_TABLES: dict[str, Table] = {
    t.name: t for t in (conditions, observations, medications, allergies, procedures, encounters)
}

# Persons removed on opt-out: a later record for them is dropped and no build includes them.
# `seq` orders purges so a build can tell which ones arrived after its snapshot.
purged_persons = Table(
    "purged_persons",
    metadata,
    Column("pseudonym", String(128), primary_key=True),
    Column("optout_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("purged_at", DateTime(timezone=True), nullable=False),
)

# One row (id 1): the purge counter. A purge and a build's final check both write it first,
# so they serialize (row lock on PostgreSQL, the write lock on SQLite).
purge_state = Table(
    "purge_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
)

builds = Table(
    "builds",
    metadata,
    Column("build_id", String(64), primary_key=True),
    Column("release_id", String(64), nullable=False, unique=True),
    Column("application_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | ready | failed
    Column("attempts", Integer, nullable=False),
    Column("reason", String(500), nullable=True),
    Column("report", JSON, nullable=True),
    Column("files", JSON, nullable=True),
    Column("purge_reruns", Integer, nullable=False),
    Column("excluded_after_purge", Integer, nullable=False),
    Column("worker", String(64), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("ix_builds_status", builds.c.status)
