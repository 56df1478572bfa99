"""Linkage's stored columns that hold field-cipher tokens, with the context each is encrypted
under (`kiban keys rotate linkage` re-encrypts them; `kiban keys retire linkage` checks them)."""

from __future__ import annotations

from kiban_common.crypto import EncryptedColumn
from kiban_linkage.context import BLOCK_SUBJECT, REVIEW_SUBJECT, VAULT_IDENTITY

ENCRYPTED_COLUMNS = (
    EncryptedColumn("linkage_records", "identity", VAULT_IDENTITY),
    EncryptedColumn("linkage_block_entries", "subject", BLOCK_SUBJECT),
    EncryptedColumn("linkage_optout_reviews", "subject", REVIEW_SUBJECT),
)
