"""Encryption of identifiable data: field tokens (AES-256-GCM with a rotating keyring), blind
indexes for lookups on encrypted columns, and sealing to another zone's public key (X25519).

Nothing here logs. Errors name key ids and contexts, never plaintexts, tokens or key material.
"""

from kiban_common.crypto._blind_index import BlindIndex
from kiban_common.crypto._cipher import FieldCipher
from kiban_common.crypto._errors import CryptoError, DecryptionError
from kiban_common.crypto._keyring import Keyring
from kiban_common.crypto._sealing import SealingKeyPair, public_key_fingerprint, seal, unseal

__all__ = [
    "BlindIndex",
    "CryptoError",
    "DecryptionError",
    "FieldCipher",
    "Keyring",
    "SealingKeyPair",
    "public_key_fingerprint",
    "seal",
    "unseal",
]
