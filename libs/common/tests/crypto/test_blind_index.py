from __future__ import annotations

import base64

import pytest

from kiban_common.crypto import BlindIndex, CryptoError

KEY = b"i" * 32


def test_deterministic_hex() -> None:
    index = BlindIndex(KEY)
    digest = index.digest("ヤマダタロウ", context="patient.name_kana")
    assert digest == index.digest("ヤマダタロウ", context="patient.name_kana")
    assert len(digest) == 64
    int(digest, 16)


def test_context_separated() -> None:
    index = BlindIndex(KEY)
    assert index.digest("1970-01-01", context="patient.birth_date") != index.digest(
        "1970-01-01", context="patient.death_date"
    )


def test_separator_is_unambiguous() -> None:
    index = BlindIndex(KEY)
    assert index.digest("b", context="a") != index.digest("", context="ab")
    assert index.digest("bc", context="a") != index.digest("c", context="ab")
    with pytest.raises(ValueError, match="context"):
        index.digest("b", context="a\x00")


def test_key_dependent() -> None:
    assert BlindIndex(KEY).digest("v", context="c") != BlindIndex(b"j" * 32).digest(
        "v", context="c"
    )


def test_values_are_not_normalized() -> None:
    index = BlindIndex(KEY)
    assert index.digest("ﾔﾏﾀﾞ", context="c") != index.digest("ヤマダ", context="c")


def test_from_b64_and_key_checks() -> None:
    assert BlindIndex.from_b64(base64.b64encode(KEY).decode()).digest(
        "v", context="c"
    ) == BlindIndex(KEY).digest("v", context="c")
    with pytest.raises(CryptoError, match="at least 32 bytes"):
        BlindIndex(b"short")
    with pytest.raises(CryptoError, match="base64"):
        BlindIndex.from_b64("not base64!")
    assert "iiii" not in repr(BlindIndex(KEY))
