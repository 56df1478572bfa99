"""The manifest signing key: loaded from `KIBAN_RELEASE__SIGNING_KEY_FILE`, or generated once
under the state directory for the embedded default (never in the repository)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kiban_common.settings import SettingsError

_VARIABLE = "KIBAN_RELEASE__SIGNING_KEY_FILE"


def load_signing_key(path: Path, *, generate: bool) -> Ed25519PrivateKey:
    if generate and not path.exists():
        _generate(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SettingsError(
            f"invalid settings:\n  {_VARIABLE}: cannot read ({type(exc).__name__})"
        ) from None
    except (ValueError, TypeError):
        raise SettingsError(f"invalid settings:\n  {_VARIABLE}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"invalid settings:\n  {_VARIABLE}: must be an Ed25519 key")
    return key


def _generate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: when two processes start together, the first key written is the one both use.
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
