"""Normalization: one person written many ways gives one subject (and one blind index)."""

from __future__ import annotations

from datetime import date

import pytest

from kiban_optout.domain import normalize
from kiban_optout.domain.subject import SubjectError, parse_subject

TODAY = date(2026, 6, 1)


@pytest.mark.parametrize(
    "text",
    [
        "1980-01-02",
        "1980/01/02",
        "1980/1/2",
        "1980.1.2",
        "19800102",
        "1980年1月2日",
        "１９８０／０１／０２",
        "昭和55年1月2日",
        "昭和５５年１月２日",
        "S55.1.2",
        "s55/1/2",
        " 昭和 55年 1月 2日 ",
    ],
)
def test_dates_in_every_accepted_form_read_the_same(text: str) -> None:
    assert normalize.parse_date(text) == date(1980, 1, 2)


def test_first_year_of_an_era_is_written_gannen() -> None:
    assert normalize.parse_date("平成元年5月1日") == date(1989, 5, 1)
    assert normalize.parse_date("令和元年5月1日") == date(2019, 5, 1)
    assert normalize.parse_date("H1/5/1") == date(1989, 5, 1)


@pytest.mark.parametrize(
    "text",
    ["昭和64年1月8日", "平成31年5月1日", "令和1年4月30日", "1980-02-30", "2/1/1980", "yesterday"],
)
def test_dates_outside_their_era_or_the_calendar_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"date|era") as refused:
        normalize.parse_date(text)
    assert text not in str(refused.value)


def test_kana_fields_fold_width_hiragana_and_spaces_to_katakana() -> None:
    assert normalize.kana("かくう") == "カクウ"
    assert normalize.kana("ｶｸｳ") == "カクウ"
    assert normalize.kana("カ クウ") == "カクウ"
    assert normalize.kana("ろーま") == normalize.kana("ロ－マ") == "ローマ"
    with pytest.raises(ValueError, match="kana"):
        normalize.kana("架空")


def test_names_fold_width_and_spaces_but_keep_their_script() -> None:
    assert normalize.name("架空\u3000") == "架空"
    assert normalize.name("Ｓｍｉｔｈ") == "Smith"
    with pytest.raises(ValueError, match="empty"):
        normalize.name(" \u3000")


def test_sex_postal_code_and_patient_id_forms() -> None:
    assert normalize.sex("Female") == normalize.sex("女") == "female"
    assert (
        normalize.postal_code("〒１００－０００１")
        == normalize.postal_code("1000001")
        == "100-0001"
    )
    assert normalize.patient_id(" ＡＢ-123 ") == "AB-123"
    with pytest.raises(ValueError, match="seven digits"):
        normalize.postal_code("100-01")


def test_two_writings_of_one_person_are_one_subject() -> None:
    a = parse_subject(
        {
            "family_name": "架空",
            "given_name": "太郎",
            "family_name_kana": "カクウ",
            "given_name_kana": "タロウ",
            "birth_date": "1980-01-02",
            "sex": "male",
        },
        today=TODAY,
    )
    b = parse_subject(
        {
            "family_name": " 架空 ",
            "given_name": "太郎",
            "family_name_kana": "かくう",
            "given_name_kana": "ﾀﾛｳ",
            "birth_date": "昭和55年1月2日",
            "sex": "男",
        },
        today=TODAY,
    )
    assert a == b
    assert a.identity() == b.identity()


def test_a_subject_needs_every_identity_field_and_a_past_birth_date() -> None:
    base = {
        "family_name": "架空",
        "given_name": "太郎",
        "family_name_kana": "カクウ",
        "given_name_kana": "タロウ",
        "birth_date": "1980-01-02",
        "sex": "male",
    }
    for field in base:
        with pytest.raises(SubjectError) as missing:
            parse_subject({k: v for k, v in base.items() if k != field}, today=TODAY)
        assert missing.value.field == field
    with pytest.raises(SubjectError, match="future"):
        parse_subject({**base, "birth_date": "2026-06-02"}, today=TODAY)
    with pytest.raises(SubjectError, match="before the birth date"):
        parse_subject({**base, "deceased_on": "1979-01-01"}, today=TODAY)
