"""Field encryption for identifiable columns and event fields: AES-256-GCM, text tokens.

Token: `v1.<kid>.<base64url(nonce || ciphertext || tag)>` (no padding). The associated data
binds the version, the key id and the caller's `context` (a column or field name such as
`intake.patient.name`), so a token copied into another field, or relabelled with another key
id, does not decrypt.

Nonces are random (96 bits): rotate the active key well before 2**32 encryptions under one key.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kiban_common.crypto._encoding import b64url_decode, b64url_encode, require_context
from kiban_common.crypto._errors import CryptoError, DecryptionError
from kiban_common.crypto._keyring import KEY_ID_PATTERN, Keyring

VERSION = "v1"
_NONCE_BYTES = 12
_TAG_BYTES = 16


class FieldCipher:
    """Encrypts with the keyring's active key, decrypts with whichever key a token names."""

    __slots__ = ("_keyring",)

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def encrypt(self, plaintext: bytes | str, *, context: str) -> str:
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else bytes(plaintext)
        kid, key = self._keyring.active_key()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, data, _associated_data(kid, context))
        return f"{VERSION}.{kid}.{b64url_encode(nonce + sealed)}"

    def decrypt(self, token: str, *, context: str) -> bytes:
        aad_context = require_context(context)
        kid, body = _split(token)
        if kid not in self._keyring:
            raise DecryptionError(f"unknown key id {kid!r}")
        raw = b64url_decode(body)
        if len(raw) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("malformed token body")
        aad = _associated_data(kid, context, encoded=aad_context)
        try:
            return AESGCM(self._keyring.key(kid)).decrypt(
                raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad
            )
        except InvalidTag:
            raise DecryptionError(
                f"token does not decrypt in context {context!r} (wrong key, wrong context or "
                "altered)"
            ) from None

    def decrypt_str(self, token: str, *, context: str) -> str:
        try:
            return self.decrypt(token, context=context).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted value is not UTF-8 text") from None

    def encrypt_json(self, obj: Mapping[str, Any], *, context: str) -> str:
        """A JSON object, serialized canonically (sorted keys, UTF-8, no NaN)."""
        if not isinstance(obj, Mapping):
            raise CryptoError("encrypt_json takes a mapping")
        try:
            text = json.dumps(
                obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError):
            raise CryptoError("value is not JSON-serializable") from None
        return self.encrypt(text, context=context)

    def decrypt_json(self, token: str, *, context: str) -> dict[str, Any]:
        text = self.decrypt_str(token, context=context)
        try:
            value = json.loads(text)
        except ValueError:
            raise DecryptionError("decrypted value is not JSON") from None
        if not isinstance(value, dict):
            raise DecryptionError("decrypted value is not a JSON object")
        return value

    @staticmethod
    def key_id_of(token: str) -> str:
        """The key a token was written with, e.g. to find rows still to re-encrypt."""
        return _split(token)[0]

    def __repr__(self) -> str:
        return f"FieldCipher({self._keyring!r})"


def _split(token: str) -> tuple[str, str]:
    if not isinstance(token, str):
        raise DecryptionError("a token must be text")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise DecryptionError(f"not a {VERSION} field token")
    if not KEY_ID_PATTERN.fullmatch(parts[1]):
        raise DecryptionError("malformed key id in token")
    return parts[1], parts[2]


def _associated_data(kid: str, context: str, *, encoded: bytes | None = None) -> bytes:
    context_bytes = encoded if encoded is not None else require_context(context)
    return b"\x00".join((VERSION.encode("ascii"), kid.encode("ascii"), context_bytes))
