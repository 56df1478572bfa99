"""Normalization table cases: every form an institution may send for the same identity."""

from __future__ import annotations

import pytest

from kiban_linkage.domain.matching import Identity, compare, normalize
from kiban_linkage.domain.matching._fields import (
    address,
    birth_date,
    insurance_number,
    postal_code,
    sex,
)
from kiban_linkage.domain.matching._text import fold_kana, kana, latin_or_kanji, variant_table


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("昭和55年1月2日", "1980-01-02"),
        ("昭和５５年１月２日", "1980-01-02"),
        ("S55.1.2", "1980-01-02"),
        ("H1/1/8", "1989-01-08"),
        ("平成元年1月8日", "1989-01-08"),
        ("令和2年12月31日", "2020-12-31"),
        ("大正15年12月24日", "1926-12-24"),
        ("明治45年7月29日", "1912-07-29"),
        ("1980/1/2", "1980-01-02"),
        ("1980-01-02", "1980-01-02"),
        ("1980-01-02T00:00:00+09:00", "1980-01-02"),
        ("19800102", "1980-01-02"),
        ("1980年1月2日", "1980-01-02"),
        ("１９８０／０１／０２", "1980-01-02"),
        ("不明", None),
        ("1980-13-02", None),
        ("", None),
        (None, None),
    ],
)
def test_birth_dates_in_every_written_form_become_iso(
    raw: str | None, expected: str | None
) -> None:
    assert birth_date(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["〒123-4567", "〒１２３－４５６７", "123-4567", "1234567", "１２３４５６７", " 123 4567 "],
)
def test_postal_codes_lose_mark_width_and_hyphen(raw: str) -> None:
    assert postal_code(raw) == "1234567"


@pytest.mark.parametrize(
    "raw",
    [
        "06130017-12-345-01",
        "06130017 記号12 番号345 枝番01",
        "保険者番号:06130017 記号：12 番号：345 枝番：01",
        "０６１３００１７・１２・３４５・０１",
    ],
)
def test_insurance_numbers_in_card_formats_are_one_number(raw: str) -> None:
    assert insurance_number(raw) == ("06130017-12-345-01", "06130017-12-345")


def test_insurance_number_without_branch_has_no_household() -> None:
    assert insurance_number("5304218") == ("5304218", None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("male", "m"), ("F", "f"), ("女", "f"), ("男性", "m"), ("other", "o"), ("unknown", None)],
)
def test_sex_codes(raw: str, expected: str | None) -> None:
    assert sex(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reading"),
    [
        ("たかはし", "タカハシ"),
        ("ﾀｶﾊｼ", "タカハシ"),
        ("タカ ハシ", "タカハシ"),
        ("ﾀｶ・ﾊｼ", "タカハシ"),
    ],
)
def test_kana_in_hiragana_half_width_or_spaced_is_one_reading(raw: str, reading: str) -> None:
    assert kana(raw) == reading


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("タロウ", "タロー"),
        ("オオノ", "オーノ"),
        ("オオノ", "オノ"),
        ("ユウコ", "ユーコ"),
        ("キョウコ", "キヨウコ"),
        ("サトウ", "サトー"),
    ],
)
def test_long_vowels_and_small_kana_fold_to_one_comparison_form(a: str, b: str) -> None:
    assert fold_kana(a) == fold_kana(b)


def test_folded_readings_are_a_comparison_level_not_an_equality() -> None:
    taro = normalize(Identity(given_name_kana="タロウ"))
    taro_long = normalize(Identity(given_name_kana="タロー"))
    assert taro.given_kana != taro_long.given_kana
    assert compare(taro, taro_long)[1] == 3  # kana-folded-equal, weaker than kana-equal
    assert compare(taro, normalize(Identity(given_name_kana="たろう")))[1] == 2  # kana-equal


@pytest.mark.parametrize(
    ("variant", "standard"),
    [
        ("髙橋", "高橋"),
        ("山﨑", "山崎"),
        ("齋藤", "斎藤"),
        ("齊藤", "斎藤"),
        ("斉藤", "斎藤"),
        ("渡邊", "渡辺"),
        ("渡邉", "渡辺"),
        ("濵田", "浜田"),
        ("櫻井", "桜井"),
        ("廣瀬", "広瀬"),
        ("𠮷田", "吉田"),
    ],
)
def test_variant_kanji_fold_to_the_table_form(variant: str, standard: str) -> None:
    assert latin_or_kanji(variant)[1] == latin_or_kanji(standard)[1]


def test_variant_folding_is_normalized_equal_not_exact() -> None:
    a, b = normalize(Identity(family_name="髙橋")), normalize(Identity(family_name="高橋"))
    assert compare(a, b)[0] == 1  # normalized-equal
    assert compare(a, normalize(Identity(family_name="髙橋 ")))[0] == 0  # exact


def test_variant_table_has_no_chains_left() -> None:
    table = variant_table()
    assert all(value not in table for value in table.values())


def test_spaces_and_dots_in_names_are_ignored() -> None:
    assert latin_or_kanji("山田　太郎")[0] == "山田太郎"
    assert latin_or_kanji("J. Smith")[1] == "jsmith"


def test_addresses_with_kanji_numerals_block_words_and_width_compare_equal() -> None:
    forms = ["東京都千代田区一丁目２番３号", "東京都千代田区1-2-3", "東京都 千代田区 １－２－３"]
    assert len({address(f) for f in forms}) == 1


def test_a_name_written_only_in_kana_is_also_its_reading() -> None:
    n = normalize(Identity(family_name="ﾀｶﾊｼ"))
    assert n.family_kana == "タカハシ"


def test_identity_reprs_never_show_values() -> None:
    ident = Identity(family_name="山田")
    assert "山田" not in repr(ident)
    assert "山田" not in repr(normalize(ident))


def test_unreadable_kanji_numerals_in_an_address_do_not_raise() -> None:
    # 十十 is no number: kept as written instead of failing the record
    assert address("東京都千代田区十十丁目5番") == "東京都千代田区十十丁目5"
    assert address("東京都千代田区二十三丁目") == address("東京都千代田区23丁目")


def test_insurance_numbers_in_plain_and_card_forms_agree() -> None:
    plain = insurance_number("40162103-3988-1-01")
    assert plain == ("40162103-3988-1-01", "40162103-3988-1")
    assert insurance_number("４０１６２１０３　記号３９８８　番号１　枝番０１") == plain
    assert insurance_number("No.40162103-3988-1-01") == plain
