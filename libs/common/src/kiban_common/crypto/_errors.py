"""Errors of the crypto package.

Messages may name a key id or a context (both are configuration, not data) but never a
plaintext, a token's content or key material: these errors end up in logs and traces.
"""

from __future__ import annotations


class CryptoError(ValueError):
    """A key, keyring or input that cannot be used."""


class DecryptionError(CryptoError):
    """A token that does not open: wrong key, wrong context, tampered or malformed.

    The causes are deliberately not told apart beyond what the token's clear header shows, so
    the error cannot serve as an oracle.
    """
