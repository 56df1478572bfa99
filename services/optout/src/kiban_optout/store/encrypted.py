"""Optout's stored columns that hold field-cipher tokens, with the context each is encrypted
under (`kiban keys rotate optout` re-encrypts them; `kiban keys retire optout` checks them)."""

from __future__ import annotations

from kiban_common.crypto import EncryptedColumn
from kiban_optout.context import SUBJECT_COLUMN

ENCRYPTED_COLUMNS = (EncryptedColumn("optout_requests", "subject", SUBJECT_COLUMN),)
