"""Field-encryption keys by key id, one of them active for new ciphertexts."""

from __future__ import annotations

import base64
import binascii
import os
import re
from types import MappingProxyType
from typing import TYPE_CHECKING

from kiban_common.crypto._errors import CryptoError

if TYPE_CHECKING:
    from collections.abc import Mapping

KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
KEY_BYTES = 32


class Keyring:
    """AES-256 keys by id. Old keys stay in the ring so that tokens written with them still
    decrypt after a rotation; only the active key encrypts.

    Errors name the offending key id, never key material, and `repr` shows ids only.
    """

    __slots__ = ("_active", "_keys")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if not keys:
            raise CryptoError("a keyring needs at least one key")
        checked: dict[str, bytes] = {}
        for kid, key in keys.items():
            _check_key_id(kid)
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
                raise CryptoError(f"key {kid!r} must be {KEY_BYTES} bytes (AES-256)")
            checked[kid] = bytes(key)
        if active_key_id not in checked:
            raise CryptoError(f"the active key id {active_key_id!r} is not in the keyring")
        self._keys: Mapping[str, bytes] = MappingProxyType(checked)
        self._active = active_key_id

    @classmethod
    def from_b64(cls, keys: Mapping[str, str], active_key_id: str) -> Keyring:
        """Keys as standard base64 text, as they come from settings or a mounted secret."""
        decoded: dict[str, bytes] = {}
        for kid, text in keys.items():
            _check_key_id(kid)
            try:
                decoded[kid] = base64.b64decode(text.strip(), validate=True)
            except (binascii.Error, ValueError, AttributeError):
                raise CryptoError(f"key {kid!r} is not valid base64") from None
        return cls(decoded, active_key_id)

    @classmethod
    def generate(cls, kid: str = "k1") -> Keyring:
        """A ring with one fresh random key, for development and tests."""
        return cls({kid: os.urandom(KEY_BYTES)}, kid)

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def active_key(self) -> tuple[str, bytes]:
        return self._active, self._keys[self._active]

    def key(self, kid: str) -> bytes:
        """Raises `KeyError` naming the id when the ring does not hold it."""
        try:
            return self._keys[kid]
        except KeyError:
            raise KeyError(kid) from None

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def export_b64(self) -> dict[str, str]:
        """Key material as base64 text, to write a development key file. Handle as a secret."""
        return {kid: base64.b64encode(key).decode("ascii") for kid, key in self._keys.items()}

    def __repr__(self) -> str:
        return f"Keyring(key_ids={sorted(self._keys)!r}, active_key_id={self._active!r})"


def _check_key_id(kid: object) -> None:
    # An invalid id is not echoed: a mapping written the wrong way round would put key
    # material in its place.
    if not isinstance(kid, str) or not KEY_ID_PATTERN.fullmatch(kid):
        raise CryptoError("a key id does not match [A-Za-z0-9_-]{1,32}")
