"""Encryption of identifiable data: field tokens (AES-256-GCM with a rotating keyring), blind
indexes for lookups on encrypted columns, sealing to another zone's public key (X25519), and
key rotation of stored tokens (`rotate_keys`, `stale_values`).

Nothing here logs. Errors name key ids and contexts, never plaintexts, tokens or key material.
"""

from kiban_common.crypto._blind_index import BlindIndex
from kiban_common.crypto._cipher import FieldCipher
from kiban_common.crypto._errors import CryptoError, DecryptionError
from kiban_common.crypto._keyring import Keyring
from kiban_common.crypto._rotation import (
    ColumnProgress,
    EncryptedColumn,
    RotationReport,
    StaleReport,
    rotate_keys,
    stale_values,
)
from kiban_common.crypto._sealing import (
    Sealer,
    SealingKeyPair,
    Unsealer,
    public_key_fingerprint,
    seal,
    unseal,
)

__all__ = [
    "BlindIndex",
    "ColumnProgress",
    "CryptoError",
    "DecryptionError",
    "EncryptedColumn",
    "FieldCipher",
    "Keyring",
    "RotationReport",
    "Sealer",
    "SealingKeyPair",
    "StaleReport",
    "Unsealer",
    "public_key_fingerprint",
    "rotate_keys",
    "seal",
    "stale_values",
    "unseal",
]
