"""The linkage service's schema: its own tables plus the shared outbox, inbox and audit log.

Identity is held only as field-cipher tokens (`identity`, `subject`); lookups go through HMAC
blind indexes of the matcher's blocking keys. Person keys are random and reveal nothing.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from kiban_common.db import shared_tables

metadata = MetaData()
shared_tables(metadata)

_BigId = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
_At = DateTime(timezone=True)

# A person: a cluster of linked records. `person_key` is random; `pseudonym` is its keyed hash.
persons = Table(
    "linkage_persons",
    metadata,
    Column("person_key", String(32), primary_key=True),
    Column("pseudonym", String(64), nullable=False, unique=True),
    Column("created_at", _At, nullable=False),
)

# The identity vault: one row per institution patient (`record_key` = intake's patient key).
records = Table(
    "linkage_records",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("record_key", String(64), nullable=False, unique=True),
    Column("person_key", String(32), nullable=False),
    Column("institution_code", String(64), nullable=False),
    Column("identity", Text, nullable=False),
    Column("created_at", _At, nullable=False),
    Column("updated_at", _At, nullable=False),
)
Index("ix_linkage_records_person_key", records.c.person_key)
Index("ix_linkage_records_institution_code", records.c.institution_code)

# Blind indexes of each record's blocking keys.
blocking_keys = Table(
    "linkage_blocking_keys",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("record_id", _BigId, primary_key=True, autoincrement=False),
)
Index("ix_linkage_blocking_keys_record_id", blocking_keys.c.record_id)

# The vault's change feed: every transaction that puts an identity into the vault (a new record,
# a replaced identity) or deletes one writes a row here, in the same transaction and under the
# vault lock, so `seq` is commit order; replicas apply what is new to their index in memory.
vault_changes = Table(
    "linkage_vault_changes",
    metadata,
    Column("seq", _BigId, primary_key=True, autoincrement=True),
    Column("writer", String(32), nullable=False),  # random per transaction
    Column("kind", String(8), nullable=False),  # add | replace | delete
    Column("record_id", _BigId, nullable=False),
)

# One row (id 1): the feed's pruning horizon (a replica behind it reloads the vault) and a
# counter every vault writer bumps on SQLite, which takes the database's write lock.
vault_state = Table(
    "linkage_vault_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("pruned_through", _BigId, nullable=False),
    Column("writes", _BigId, nullable=False),
)

# Pairs scored in the "possible" band: never linked automatically, for operator review.
possible_links = Table(
    "linkage_possible_links",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("record_id", _BigId, nullable=False),
    Column("other_record_id", _BigId, nullable=False),
    Column("probability", Float, nullable=False),
    Column("status", String(16), nullable=False),  # open | linked | distinct
    Column("created_at", _At, nullable=False),
    Column("decided_at", _At, nullable=True),
    Column("decided_by", String(256), nullable=True),
)
Index("ix_linkage_possible_links_status", possible_links.c.status)
Index("ix_linkage_possible_links_record_id", possible_links.c.record_id)
Index("ix_linkage_possible_links_other_record_id", possible_links.c.other_record_id)

# Persons under an opt-out; `institution_code` "" = every institution.
person_blocks = Table(
    "linkage_person_blocks",
    metadata,
    Column("person_key", String(32), primary_key=True),
    Column("institution_code", String(64), primary_key=True),
    Column("optout_id", String(64), nullable=False),
    Column("action", String(16), nullable=False),
    Column("blocked_at", _At, nullable=False),
)

# Every applied opt-out's subject (encrypted, blind-indexed): records that arrive later and
# match it are blocked too.
block_entries = Table(
    "linkage_block_entries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("optout_id", String(64), nullable=False, unique=True),
    Column("action", String(16), nullable=False),
    Column("institution_code", String(64), nullable=True),
    Column("subject", Text, nullable=False),
    Column("created_at", _At, nullable=False),
    Column("matched_persons", Integer, nullable=False),  # persons it matched when applied
    Column("applied_records", Integer, nullable=False),  # records it caught later
)

block_keys = Table(
    "linkage_block_keys",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("entry_id", _BigId, primary_key=True, autoincrement=False),
)

# Opt-outs the matcher could not decide: no acknowledgement until an operator resolves them.
optout_reviews = Table(
    "linkage_optout_reviews",
    metadata,
    Column("optout_id", String(64), primary_key=True),
    Column("action", String(16), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("institution_code", String(64), nullable=True),
    Column("subject", Text, nullable=False),
    Column("candidates", JSON, nullable=False),  # [{"person": key, "probability": p}]
    Column("status", String(16), nullable=False),  # open | resolved
    Column("received_at", _At, nullable=False),
    Column("resolved_at", _At, nullable=True),
    Column("resolved_by", String(256), nullable=True),
)
Index("ix_linkage_optout_reviews_status", optout_reviews.c.status)

# Fitted match models (JSON of `MatchModel.to_dict()`); the newest is in force.
models = Table(
    "linkage_models",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("fitted_at", _At, nullable=False),
    Column("records", Integer, nullable=False),
    Column("params", Text, nullable=False),
)

# Operator data operations (who looked at or changed which person), append-only.
operator_log = Table(
    "linkage_operator_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", _At, nullable=False),
    Column("principal", String(256), nullable=False),
    Column("action", String(32), nullable=False),
    Column("person_key", String(32), nullable=True),
    Column("detail", JSON, nullable=False),
)
Index("ix_linkage_operator_log_at", operator_log.c.at)

OPERATOR_LOG = "linkage_operator_log"
