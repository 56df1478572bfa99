"""Intake's stored columns that hold field-cipher tokens, with the context each is encrypted
under (`kiban keys rotate intake` re-encrypts them; `kiban keys retire intake` checks them)."""

from __future__ import annotations

from kiban_common.crypto import EncryptedColumn
from kiban_intake.intake import OUTCOME, PATIENT_IDENTITY, ROW_IDENTITY, ROW_RESOURCES
from kiban_intake.store.tables import PATIENTS, RECORDS, SUBMISSIONS

ENCRYPTED_COLUMNS = (
    EncryptedColumn(PATIENTS, "identity", PATIENT_IDENTITY),
    EncryptedColumn(RECORDS, "identity", ROW_IDENTITY),
    EncryptedColumn(RECORDS, "resources", ROW_RESOURCES),
    EncryptedColumn(SUBMISSIONS, "outcome", OUTCOME),
)
