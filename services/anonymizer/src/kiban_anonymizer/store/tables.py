"""The anonymizer service's schema: its own tables plus the shared outbox, inbox and audit log."""

from __future__ import annotations

from sqlalchemy import MetaData

from kiban_common.db import shared_tables

metadata = MetaData()
shared_tables(metadata)
