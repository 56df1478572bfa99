"""The signed manifest of a release: what was provided, to whom, for which application, when.

The manifest is a JSON object; its signature is Ed25519 over the manifest's canonical form
(UTF-8 JSON, keys sorted, no whitespace: `canonical(manifest)`). The envelope served by the API
is `{"manifest", "signature" (base64), "algorithm": "Ed25519", "key_id", "public_key" (PEM)}`.
Anyone holding the operator's public key verifies it offline (`verify`, `kiban release verify`,
or `openssl pkeyutl -verify -rawin`). `key_id` is the first 16 hex digits of the SHA-256 of the
raw 32-byte public key, so a verifier can tell which key it needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
MANIFEST_VERSION = 1


def build_manifest(
    *,
    release_id: str,
    application_id: str,
    recipient: str | None,
    organization: str,
    kind: str,
    build_id: str,
    issued_at: datetime,
    expires_at: datetime,
    files: Sequence[Mapping[str, Any]],
    privacy: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "release_id": release_id,
        "application_id": application_id,
        "recipient": recipient,
        "organization": organization,
        "kind": kind,
        "build_id": build_id,
        "issued_at": issued_at.isoformat(),
        "expires_at": expires_at.isoformat(),
        "files": [
            {"name": f["name"], "rows": f["rows"], "bytes": f["bytes"], "sha256": f["sha256"]}
            for f in files
        ],
        "privacy": dict(privacy) if privacy is not None else None,
    }


def canonical(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class ManifestSigner:
    """Signs manifests with the operator's Ed25519 key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)
        self.public_pem = public_pem(self.public_key)

    def sign(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        signature = self._key.sign(canonical(manifest))
        return {
            "manifest": dict(manifest),
            "signature": base64.b64encode(signature).decode(),
            "algorithm": ALGORITHM,
            "key_id": self.key_id,
            "public_key": self.public_pem,
        }

    def __repr__(self) -> str:
        return f"ManifestSigner(key_id={self.key_id!r})"


def verify(envelope: Mapping[str, Any], public_key_pem: bytes | str | None = None) -> bool:
    """True when `envelope["signature"]` is a valid Ed25519 signature of its manifest.

    With `public_key_pem` (the operator's key, obtained separately: pin it) the envelope's own
    `public_key` is ignored; without it the envelope is checked against the key it carries,
    which proves integrity but not who signed."""
    try:
        if envelope.get("algorithm") != ALGORITHM:
            return False
        pem = public_key_pem if public_key_pem is not None else envelope["public_key"]
        key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
        if not isinstance(key, Ed25519PublicKey):
            return False
        signature = base64.b64decode(envelope["signature"], validate=True)
        key.verify(signature, canonical(envelope["manifest"]))
    except (InvalidSignature, KeyError, TypeError, ValueError):
        return False
    return True
