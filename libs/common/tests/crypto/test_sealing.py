from __future__ import annotations

import base64

import pytest

from kiban_common.crypto import (
    CryptoError,
    DecryptionError,
    Sealer,
    SealingKeyPair,
    Unsealer,
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


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _ephemeral(token: str) -> bytes:
    body = token.split(".")[2]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))[:32]


def test_a_sealer_reuses_its_ephemeral_key_and_every_message_opens(core: SealingKeyPair) -> None:
    sealer = Sealer(core.public_pem(), max_messages=3)
    tokens = [sealer.seal(CANARY + bytes([i]), context="c") for i in range(4)]
    assert len({_ephemeral(t) for t in tokens[:3]}) == 1
    assert _ephemeral(tokens[3]) != _ephemeral(tokens[0])  # the fourth starts a new context
    assert len(set(tokens)) == 4  # a fresh nonce per message
    unsealer = Unsealer(core.private_pem())
    for i, token in enumerate(tokens):
        assert unsealer.unseal(token, context="c") == CANARY + bytes([i])
        assert unseal(token, private_key_pem=core.private_pem(), context="c") == CANARY + bytes([i])


def test_a_sealer_context_expires_after_max_age(core: SealingKeyPair) -> None:
    clock = _Clock()
    sealer = Sealer(core.public_pem(), max_age=60, clock=clock)
    first = sealer.seal(b"a", context="c")
    clock.now = 59.9
    assert _ephemeral(sealer.seal(b"b", context="c")) == _ephemeral(first)
    clock.now = 60.0
    assert _ephemeral(sealer.seal(b"c", context="c")) != _ephemeral(first)


def test_an_unsealer_with_a_cached_key_still_refuses_altered_tokens_and_other_contexts(
    core: SealingKeyPair,
) -> None:
    sealer, unsealer = Sealer(core.public_pem()), Unsealer(core.private_pem(), cache_size=1)
    token = sealer.seal(CANARY, context="optout.subject")
    assert unsealer.unseal(token, context="optout.subject") == CANARY  # key now cached
    with pytest.raises(DecryptionError) as refused:
        unsealer.unseal(token, context="intake.subject")
    assert "佐藤" not in str(refused.value)
    assert "CANARY" not in str(refused.value)
    version, fingerprint, body = token.split(".")
    altered = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    with pytest.raises(DecryptionError):
        unsealer.unseal(f"{version}.{fingerprint}.{altered}", context="optout.subject")
    other = SealingKeyPair.generate()
    with pytest.raises(DecryptionError):
        Unsealer(other.private_pem()).unseal(token, context="optout.subject")


def test_a_sealer_needs_at_least_one_message_per_context(core: SealingKeyPair) -> None:
    with pytest.raises(CryptoError):
        Sealer(core.public_pem(), max_messages=0)
