from __future__ import annotations

import base64

import pytest

from kiban_common.crypto import (
    CryptoError,
    DecryptionError,
    SealingKeyPair,
    public_key_fingerprint,
    seal,
    unseal,
)

CANARY = "佐藤花子-CANARY-1985-04-01".encode()


@pytest.fixture(scope="module")
def core() -> SealingKeyPair:
    return SealingKeyPair.generate()


def test_round_trip(core: SealingKeyPair) -> None:
    token = seal(CANARY, recipient_public_key_pem=core.public_pem(), context="optout.subject")
    assert unseal(token, private_key_pem=core.private_pem(), context="optout.subject") == CANARY


def test_token_format(core: SealingKeyPair) -> None:
    token = seal(b"x", recipient_public_key_pem=core.public_pem(), context="c")
    version, fingerprint, body = token.split(".")
    assert version == "s1"
    assert fingerprint == core.fingerprint == public_key_fingerprint(core.public_pem())
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 32 + 12 + 1 + 16


def test_each_seal_differs(core: SealingKeyPair) -> None:
    pem = core.public_pem()
    assert seal(CANARY, recipient_public_key_pem=pem, context="c") != seal(
        CANARY, recipient_public_key_pem=pem, context="c"
    )


def test_wrong_private_key_fails(core: SealingKeyPair) -> None:
    token = seal(CANARY, recipient_public_key_pem=core.public_pem(), context="c")
    other = SealingKeyPair.generate()
    with pytest.raises(DecryptionError, match="sealed to key") as info:
        unseal(token, private_key_pem=other.private_pem(), context="c")
    assert CANARY.decode() not in str(info.value)


def test_wrong_private_key_with_forged_fingerprint_fails(core: SealingKeyPair) -> None:
    other = SealingKeyPair.generate()
    token = seal(CANARY, recipient_public_key_pem=core.public_pem(), context="c")
    forged = token.replace(core.fingerprint, other.fingerprint)
    with pytest.raises(DecryptionError):
        unseal(forged, private_key_pem=other.private_pem(), context="c")


def test_wrong_context_fails(core: SealingKeyPair) -> None:
    token = seal(CANARY, recipient_public_key_pem=core.public_pem(), context="optout.subject")
    with pytest.raises(DecryptionError) as info:
        unseal(token, private_key_pem=core.private_pem(), context="intake.identity")
    assert CANARY.decode() not in str(info.value)


@pytest.mark.parametrize("position", [0, 31, 32, 44, -1])
def test_tampered_byte_fails(core: SealingKeyPair, position: int) -> None:
    token = seal(CANARY, recipient_public_key_pem=core.public_pem(), context="c")
    prefix, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position] ^= 0x01
    tampered = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(DecryptionError):
        unseal(tampered, private_key_pem=core.private_pem(), context="c")


def test_private_pem_round_trip(core: SealingKeyPair) -> None:
    again = SealingKeyPair.from_private_pem(core.private_pem())
    assert again.public_pem() == core.public_pem()
    assert "PRIVATE" not in repr(core)


def test_bad_keys_are_rejected(core: SealingKeyPair) -> None:
    with pytest.raises(CryptoError, match="PEM public key"):
        seal(b"x", recipient_public_key_pem=b"garbage", context="c")
    with pytest.raises(CryptoError, match="private key"):
        unseal("s1.x.y", private_key_pem=core.public_pem(), context="c")
    with pytest.raises(DecryptionError):
        unseal("v1.k1.AAAA", private_key_pem=core.private_pem(), context="c")
