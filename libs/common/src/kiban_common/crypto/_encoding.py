"""Base64url without padding, decoded strictly, for the text form of tokens."""

from __future__ import annotations

import base64
import binascii
import re

from kiban_common.crypto._errors import DecryptionError

_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Raises `DecryptionError` (without echoing `text`) when it is not base64url."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise DecryptionError("malformed token body")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError("malformed token body") from None


def require_context(context: str) -> bytes:
    """Contexts are joined to other fields with NUL, so they may not contain it."""
    if not context or "\x00" in context:
        raise ValueError("context must be a non-empty string without NUL characters")
    return context.encode("utf-8")
