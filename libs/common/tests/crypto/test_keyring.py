from __future__ import annotations

import base64

import pytest

from kiban_common.crypto import CryptoError, Keyring

SECRET = b"S" * 32
SECRET_B64 = base64.b64encode(SECRET).decode()


def test_from_b64_round_trip() -> None:
    ring = Keyring.from_b64({"k1": SECRET_B64, "k2": base64.b64encode(b"\x00" * 32).decode()}, "k2")
    assert ring.active_key_id == "k2"
    assert ring.key_ids == {"k1", "k2"}
    assert ring.key("k1") == SECRET
    assert ring.export_b64()["k1"] == SECRET_B64


def test_generate_gives_fresh_keys() -> None:
    assert Keyring.generate().key("k1") != Keyring.generate().key("k1")
    assert Keyring.generate("dev1").active_key_id == "dev1"


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ({}, "k1", "at least one key"),
        ({"k1": b"short"}, "k1", "'k1' must be 32 bytes"),
        ({"k1": b"x" * 33}, "k1", "'k1' must be 32 bytes"),
        ({"k1": SECRET}, "k2", "'k2' is not in the keyring"),
        ({"bad id": SECRET}, "bad id", "does not match"),
        ({"x" * 33: SECRET}, "x" * 33, "does not match"),
    ],
)
def test_validation_names_the_key_id_only(
    keys: dict[str, bytes], active: str, message: str
) -> None:
    with pytest.raises(CryptoError, match=message) as info:
        Keyring(keys, active)
    assert isinstance(info.value, ValueError)
    for key in keys.values():
        assert repr(key) not in str(info.value)
        assert SECRET_B64 not in str(info.value)


def test_bad_base64_does_not_echo_material() -> None:
    with pytest.raises(CryptoError, match="'k1' is not valid base64") as info:
        Keyring.from_b64({"k1": SECRET_B64 + "!"}, "k1")
    assert SECRET_B64 not in str(info.value)


def test_swapped_mapping_does_not_echo_material() -> None:
    with pytest.raises(CryptoError) as info:
        Keyring.from_b64({SECRET_B64: "k1"}, "k1")
    assert SECRET_B64 not in str(info.value)


def test_unknown_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        Keyring.generate().key("k2")
