from __future__ import annotations

import base64

import pytest

from kiban_common.crypto import CryptoError, DecryptionError, FieldCipher, Keyring

CANARY = "山田太郎-CANARY-19700101"


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher(Keyring.generate("k1"))


def test_round_trip_bytes_and_text(cipher: FieldCipher) -> None:
    token = cipher.encrypt(b"\x00\x01binary", context="intake.patient.raw")
    assert cipher.decrypt(token, context="intake.patient.raw") == b"\x00\x01binary"
    token = cipher.encrypt(CANARY, context="intake.patient.name")
    assert cipher.decrypt_str(token, context="intake.patient.name") == CANARY


def test_token_format(cipher: FieldCipher) -> None:
    token = cipher.encrypt("x", context="c")
    version, kid, body = token.split(".")
    assert (version, kid) == ("v1", "k1")
    assert "=" not in body
    assert len(base64.urlsafe_b64decode(body + "==")) == 12 + 1 + 16
    assert cipher.key_id_of(token) == "k1"


def test_same_value_encrypts_differently(cipher: FieldCipher) -> None:
    first = cipher.encrypt(CANARY, context="c")
    second = cipher.encrypt(CANARY, context="c")
    assert first != second


def test_wrong_context_fails(cipher: FieldCipher) -> None:
    token = cipher.encrypt(CANARY, context="intake.patient.name")
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(token, context="intake.patient.address")
    assert CANARY not in str(info.value)


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])
def test_tampered_byte_fails(cipher: FieldCipher, position: int) -> None:
    token = cipher.encrypt(CANARY, context="c")
    prefix, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[position] ^= 0x01
    tampered = prefix + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(DecryptionError) as info:
        cipher.decrypt(tampered, context="c")
    assert CANARY not in str(info.value)
    assert body not in str(info.value)


def test_relabelled_key_id_fails() -> None:
    ring = Keyring({"k1": b"\x01" * 32, "k2": b"\x01" * 32}, "k1")
    cipher = FieldCipher(ring)
    token = cipher.encrypt("x", context="c")
    with pytest.raises(DecryptionError):
        cipher.decrypt(token.replace("v1.k1.", "v1.k2."), context="c")


def test_wrong_key_fails(cipher: FieldCipher) -> None:
    token = cipher.encrypt(CANARY, context="c")
    other = FieldCipher(Keyring.generate("k1"))
    with pytest.raises(DecryptionError) as info:
        other.decrypt(token, context="c")
    assert CANARY not in str(info.value)


def test_unknown_key_id_fails(cipher: FieldCipher) -> None:
    token = FieldCipher(Keyring.generate("k9")).encrypt("x", context="c")
    with pytest.raises(DecryptionError, match="k9"):
        cipher.decrypt(token, context="c")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.k1",
        "v2.k1.AAAA",
        "v1.k 1.AAAA",
        "v1.k1.AAAA",
        "v1.k1.A",
        "v1.k1.!!!!",
        "v1.k1.AA==",
        "v1.k1.a.b",
    ],
)
def test_malformed_tokens_fail(cipher: FieldCipher, token: str) -> None:
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, context="c")


def test_key_rotation() -> None:
    old = Keyring.generate("k1")
    token_k1 = FieldCipher(old).encrypt(CANARY, context="c")
    rotated = Keyring(
        {"k1": base64.b64decode(old.export_b64()["k1"]), "k2": b"\x02" * 32}, active_key_id="k2"
    )
    cipher = FieldCipher(rotated)
    assert cipher.decrypt_str(token_k1, context="c") == CANARY
    token_k2 = cipher.encrypt(CANARY, context="c")
    assert cipher.key_id_of(token_k2) == "k2"
    assert cipher.decrypt_str(token_k2, context="c") == CANARY


def test_json_round_trip_is_canonical(cipher: FieldCipher) -> None:
    payload = {"name": CANARY, "birth_date": "1970-01-01", "a": [1, 2]}
    token = cipher.encrypt_json(payload, context="identity")
    assert cipher.decrypt_json(token, context="identity") == payload
    text = cipher.decrypt_str(token, context="identity")
    assert text == '{"a":[1,2],"birth_date":"1970-01-01","name":"山田太郎-CANARY-19700101"}'


def test_json_errors_do_not_echo(cipher: FieldCipher) -> None:
    with pytest.raises(CryptoError) as info:
        cipher.encrypt_json({"name": CANARY, "bad": {CANARY}}, context="c")
    assert CANARY not in str(info.value)
    token = cipher.encrypt(f'["{CANARY}"]', context="c")
    with pytest.raises(DecryptionError) as info2:
        cipher.decrypt_json(token, context="c")
    assert CANARY not in str(info2.value)


def test_context_must_be_usable(cipher: FieldCipher) -> None:
    with pytest.raises(ValueError, match="context"):
        cipher.encrypt("x", context="")
    with pytest.raises(ValueError, match="context"):
        cipher.encrypt("x", context="a\x00b")


def test_repr_hides_keys() -> None:
    ring = Keyring({"k1": b"K" * 32}, "k1")
    assert "KKKK" not in repr(ring)
    assert "KKKK" not in repr(FieldCipher(ring))
    assert "k1" in repr(ring)
