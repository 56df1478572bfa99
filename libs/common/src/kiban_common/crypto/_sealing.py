"""Sealing to another zone: anyone with the recipient's public key can encrypt, only the
holder of the private key can decrypt.

The information zone takes opt-out requests from patients on the internet. It seals the
identifying part to the core zone's public key, so it can write identity it can never read back.

An ephemeral X25519 key agrees a secret with the recipient's key; HKDF-SHA256 (salted with
both public keys) derives an AES-256-GCM key; each message has a random nonce; the associated
data binds the version, the recipient's fingerprint and the caller's `context`.

`seal` makes a new ephemeral key per message. A `Sealer` reuses one for a bounded number of
messages and seconds, as an HPKE sender context seals several messages (RFC 9180, section 5.2):
the key agreement (~0.1 ms, the bulk of a seal) is paid once per context, not per request. The
token format is the same, so `unseal` opens both; an `Unsealer` keeps the keys it derived per
ephemeral key, so a context's later messages open without a key agreement either.

Token: `s1.<recipient fingerprint>.<base64url(ephemeral public key || nonce || ciphertext)>`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiban_common.crypto._encoding import b64url_decode, b64url_encode, require_context
from kiban_common.crypto._errors import CryptoError, DecryptionError

VERSION = "s1"
_PUBLIC_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HKDF_INFO = b"kiban seal v1 x25519 aes-256-gcm"
_FINGERPRINT_CHARS = 16


class SealingKeyPair:
    """An X25519 key pair. The private half stays in the zone that opens sealed tokens."""

    __slots__ = ("_private",)

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private = private_key

    @classmethod
    def generate(cls) -> SealingKeyPair:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_pem(cls, pem: bytes) -> SealingKeyPair:
        return cls(_load_private(pem))

    def public_pem(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8: store it as a secret."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def fingerprint(self) -> str:
        return _fingerprint(_raw_public(self._private.public_key()))

    def __repr__(self) -> str:
        return f"SealingKeyPair(fingerprint={self.fingerprint!r})"


def public_key_fingerprint(public_key_pem: bytes) -> str:
    """The id that sealed tokens carry for the key they were sealed to (16 hex characters)."""
    return _fingerprint(_raw_public(_load_public(public_key_pem)))


def seal(plaintext: bytes, *, recipient_public_key_pem: bytes, context: str) -> str:
    """Seal one message with an ephemeral key of its own."""
    return Sealer(recipient_public_key_pem, max_messages=1).seal(plaintext, context=context)


def unseal(token: str, *, private_key_pem: bytes, context: str) -> bytes:
    return Unsealer(private_key_pem, cache_size=0).unseal(token, context=context)


class Sealer:
    """Seals to one recipient, reusing an ephemeral key for at most `max_messages` messages and
    `max_age` seconds. Within a context, messages differ by their random 96-bit nonce under
    one AES key (safe far beyond these bounds); the cost is that one ephemeral key, if stolen
    from this process's memory within its lifetime, opens that context's messages — which
    this process held in the clear anyway."""

    def __init__(
        self,
        recipient_public_key_pem: bytes,
        *,
        max_messages: int = 4096,
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_messages < 1:
            raise CryptoError("a sealer needs max_messages of at least 1")
        self._recipient = _raw_public(_load_public(recipient_public_key_pem))
        self._fingerprint = _fingerprint(self._recipient)
        self._max_messages = max_messages
        self._max_age = max_age
        self._clock = clock
        self._context: tuple[bytes, AESGCM] | None = None
        self._used = 0
        self._born = 0.0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def seal(self, plaintext: bytes, *, context: str) -> str:
        aad = _associated_data(self._fingerprint, context)
        ephemeral_public, aead = self._current()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = aead.encrypt(nonce, bytes(plaintext), aad)
        return f"{VERSION}.{self._fingerprint}.{b64url_encode(ephemeral_public + nonce + sealed)}"

    def _current(self) -> tuple[bytes, AESGCM]:
        now = self._clock()
        if (
            self._context is None
            or self._used >= self._max_messages
            or now - self._born >= self._max_age
        ):
            ephemeral = X25519PrivateKey.generate()
            ephemeral_public = _raw_public(ephemeral.public_key())
            shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(self._recipient))
            key = _derive(shared, ephemeral_public, self._recipient)
            self._context = (ephemeral_public, AESGCM(key))
            self._used, self._born = 0, now
        self._used += 1
        return self._context

    def __repr__(self) -> str:
        return f"Sealer(recipient={self._fingerprint!r})"


class Unsealer:
    """Opens tokens sealed to one key pair; keeps the AES keys of the last `cache_size`
    ephemeral keys it met (a `Sealer`'s context sends many messages under one)."""

    def __init__(self, private_key_pem: bytes, *, cache_size: int = 1024) -> None:
        self._private = _load_private(private_key_pem)
        self._recipient = _raw_public(self._private.public_key())
        self._fingerprint = _fingerprint(self._recipient)
        self._cache_size = cache_size
        self._keys: OrderedDict[bytes, AESGCM] = OrderedDict()

    def unseal(self, token: str, *, context: str) -> bytes:
        aad = _associated_data(self._fingerprint, context)
        token_fingerprint, body = _split(token)
        if token_fingerprint != self._fingerprint:
            raise DecryptionError(
                f"token is sealed to key {token_fingerprint!r}, not to {self._fingerprint!r}"
            )
        raw = b64url_decode(body)
        if len(raw) < _PUBLIC_BYTES + _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("malformed token body")
        ephemeral_public = raw[:_PUBLIC_BYTES]
        nonce = raw[_PUBLIC_BYTES : _PUBLIC_BYTES + _NONCE_BYTES]
        try:
            return self._aead(ephemeral_public).decrypt(
                nonce, raw[_PUBLIC_BYTES + _NONCE_BYTES :], aad
            )
        except (InvalidTag, ValueError):
            raise DecryptionError(
                f"sealed token does not open in context {context!r} (wrong key, wrong context "
                "or altered)"
            ) from None

    def _aead(self, ephemeral_public: bytes) -> AESGCM:
        aead = self._keys.get(ephemeral_public)
        if aead is not None:
            self._keys.move_to_end(ephemeral_public)
            return aead
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        aead = AESGCM(_derive(shared, ephemeral_public, self._recipient))
        if self._cache_size > 0:
            self._keys[ephemeral_public] = aead
            if len(self._keys) > self._cache_size:
                self._keys.popitem(last=False)
        return aead

    def __repr__(self) -> str:
        return f"Unsealer(fingerprint={self._fingerprint!r})"


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ephemeral_public + recipient_public,
        info=_HKDF_INFO,
    )
    return hkdf.derive(shared)


def _associated_data(fingerprint: str, context: str) -> bytes:
    return b"\x00".join(
        (VERSION.encode("ascii"), fingerprint.encode("ascii"), require_context(context))
    )


def _split(token: str) -> tuple[str, str]:
    if not isinstance(token, str):
        raise DecryptionError("a token must be text")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise DecryptionError(f"not an {VERSION} sealed token")
    return parts[1], parts[2]


def _fingerprint(raw_public: bytes) -> str:
    return hashlib.sha256(raw_public).hexdigest()[:_FINGERPRINT_CHARS]


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _load_public(pem: bytes) -> X25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise CryptoError("not a PEM public key") from None
    if not isinstance(key, X25519PublicKey):
        raise CryptoError("the recipient key must be an X25519 public key")
    return key


def _load_private(pem: bytes) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise CryptoError("not an unencrypted PEM private key") from None
    if not isinstance(key, X25519PrivateKey):
        raise CryptoError("the private key must be an X25519 key")
    return key
