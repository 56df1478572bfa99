"""Deterministic keyed digests for equality lookups on encrypted columns."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from kiban_common.crypto._encoding import require_context
from kiban_common.crypto._errors import CryptoError

MIN_KEY_BYTES = 32


class BlindIndex:
    """`digest` is HMAC-SHA256(key, context || NUL || value) as hex.

    The context (a column or field name) separates digests of the same value in different
    fields, so two indexes cannot be joined. The digest is exact-match only: callers normalize
    values first (NFKC, trimmed, case and width folded, a date as ISO `YYYY-MM-DD`, ...) with
    the same rules on write and on lookup, or equal values will not meet. Use a key distinct
    from the field-encryption keys; rotating it means recomputing every stored digest.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < MIN_KEY_BYTES:
            raise CryptoError(f"a blind-index key must be at least {MIN_KEY_BYTES} bytes")
        self._key = bytes(key)

    @classmethod
    def from_b64(cls, text: str) -> BlindIndex:
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError, AttributeError):
            raise CryptoError("the blind-index key is not valid base64") from None
        return cls(key)

    def digest(self, value: str, *, context: str) -> str:
        if not isinstance(value, str):
            raise CryptoError("a blind index takes text; normalize and convert values first")
        message = require_context(context) + b"\x00" + value.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "BlindIndex(<key hidden>)"
