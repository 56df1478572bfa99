"""A service's key material, built once from its settings and handed to its code.

Keys are loaded lazily so a service that never encrypts (review, release) starts without field
keys, and a missing key fails where it is first needed with the variable to set, never with the
key material.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from kiban_common.crypto import BlindIndex, FieldCipher, Keyring, Sealer, Unsealer
from kiban_common.settings import CryptoSettings, SettingsError


class ServiceCrypto:
    def __init__(self, settings: CryptoSettings) -> None:
        self._settings = settings

    @cached_property
    def cipher(self) -> FieldCipher:
        """AES-256-GCM field encryption with the service's keyring."""
        s = self._settings
        if not (s.keys and s.active_key_id):
            raise SettingsError(
                "invalid settings:\n  KIBAN_CRYPTO__KEYS (or KIBAN_CRYPTO__KEYS_FILE): "
                "field keys are required by this service"
            )
        keys = {kid: secret.get_secret_value() for kid, secret in s.keys.items()}
        return FieldCipher(Keyring.from_b64(keys, s.active_key_id))

    @cached_property
    def index(self) -> BlindIndex:
        """HMAC blind index for lookups on encrypted columns."""
        if self._settings.index_key is None:
            raise SettingsError(
                "invalid settings:\n  KIBAN_CRYPTO__INDEX_KEY (or KIBAN_CRYPTO__KEYS_FILE): "
                "a blind-index key is required by this service"
            )
        return BlindIndex.from_b64(self._settings.index_key.get_secret_value())

    @cached_property
    def _sealer(self) -> Sealer:
        return Sealer(_read(self._settings.sealing_public_key_file, "SEALING_PUBLIC_KEY_FILE"))

    @cached_property
    def _unsealer(self) -> Unsealer:
        return Unsealer(_read(self._settings.sealing_private_key_file, "SEALING_PRIVATE_KEY_FILE"))

    def seal(self, plaintext: bytes, *, context: str) -> str:
        """Encrypt to the core zone's public key (an `s1.` token); one key agreement serves
        many requests (`Sealer`)."""
        return self._sealer.seal(plaintext, context=context)

    def unseal(self, token: str, *, context: str) -> bytes:
        """Open an `s1.` token with the core zone's private key (core services only)."""
        return self._unsealer.unseal(token, context=context)

    def __repr__(self) -> str:
        return "ServiceCrypto(<keys hidden>)"


def _read(path: Path | None, name: str) -> bytes:
    if path is None:
        raise SettingsError(f"invalid settings:\n  KIBAN_CRYPTO__{name}: required by this service")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"invalid settings:\n  KIBAN_CRYPTO__{name}: cannot read ({type(exc).__name__})"
        ) from None
