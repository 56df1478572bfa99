"""The collection rules and identity normalization as pure functions."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from kiban_intake.domain.normalize import match_keys, normalize_name, normalize_postal_code
from kiban_intake.domain.rules import Notice, decide, renewal_due, turns_adult_on

NOTICE_DAY = date(2025, 4, 1)


def _decide(
    today: date,
    *notices: Notice,
    birth: date | None = date(1980, 1, 2),
    deceased: date | None = None,
    opted_out: bool = False,
):  # type: ignore[no-untyped-def]
    return decide(
        notices=notices,
        birth_date=birth,
        deceased_on=deceased,
        today=today,
        period_days=30,
        opted_out=opted_out,
    )


def test_day_29_after_the_notice_is_held_and_day_30_is_eligible() -> None:
    held = _decide(NOTICE_DAY + timedelta(days=29), Notice(NOTICE_DAY))
    assert (held.status, held.reason, held.eligible_on) == (
        "held",
        "notice_period",
        NOTICE_DAY + timedelta(days=30),
    )
    assert _decide(NOTICE_DAY + timedelta(days=30), Notice(NOTICE_DAY)).status == "accepted"


def test_no_notice_is_rejected_and_opt_out_wins_over_everything() -> None:
    assert _decide(NOTICE_DAY).reason == "no_notice"
    assert _decide(NOTICE_DAY + timedelta(days=90), Notice(NOTICE_DAY), opted_out=True).reason == (
        "opted_out"
    )


def test_a_15_year_old_notified_without_the_guardian_is_rejected() -> None:
    birth = date(2010, 1, 1)  # 15 on the notice day
    today = NOTICE_DAY + timedelta(days=40)
    assert _decide(today, Notice(NOTICE_DAY), birth=birth).reason == "guardian_not_notified"
    assert _decide(today, Notice(NOTICE_DAY, guardian_notified=True), birth=birth).status == (
        "accepted"
    )


def test_notified_as_a_minor_and_now_16_is_held_until_a_renewed_notice() -> None:
    birth = date(2009, 6, 1)  # 15 at the notice, 16 on 2025-06-01
    minor_notice = Notice(date(2025, 1, 10), guardian_notified=True)
    before = _decide(date(2025, 5, 31), minor_notice, birth=birth)
    assert before.status == "accepted"
    after = _decide(date(2025, 6, 1), minor_notice, birth=birth)
    assert (after.status, after.reason, after.eligible_on) == (
        "held",
        "renewed_notice_required",
        None,
    )
    assert renewal_due([minor_notice], birth, None, date(2025, 6, 1))
    renewed = Notice(date(2025, 6, 5))
    waiting = _decide(date(2025, 6, 10), minor_notice, renewed, birth=birth)
    assert (waiting.status, waiting.eligible_on) == ("held", date(2025, 7, 5))
    assert _decide(date(2025, 7, 5), minor_notice, renewed, birth=birth).status == "accepted"
    assert not renewal_due([minor_notice, renewed], birth, None, date(2025, 7, 5))


def test_a_patient_who_died_at_15_needs_no_renewed_notice() -> None:
    birth = date(2009, 6, 1)
    notice = Notice(date(2024, 1, 10), guardian_notified=True)
    decision = _decide(date(2026, 1, 1), notice, birth=birth, deceased=date(2024, 3, 1))
    assert decision.status == "accepted"


def test_the_16th_birthday_of_a_leap_day_child_in_a_common_year_is_1_march() -> None:
    assert turns_adult_on(date(2008, 2, 29)) == date(2024, 2, 29)
    assert turns_adult_on(date(2084, 2, 29)) == date(2100, 3, 1)  # 2100 is not a leap year


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("やまだ", "ヤマダ"),
        ("ﾔﾏﾀﾞ", "ヤマダ"),
        ("ヤマダ　タロウ", "ヤマダタロウ"),
        (" 山田 ", "山田"),
        ("ＹＡＭＡＤＡ", "yamada"),
        ("", None),
        (None, None),
    ],
)
def test_names_normalize_like_the_optout_service(raw: str | None, expected: str | None) -> None:
    assert normalize_name(raw) == expected


def test_match_keys_meet_across_writing_forms_and_need_a_birth_date() -> None:
    submitted = {
        "family_name": "山田",
        "given_name": "太郎",
        "family_name_kana": "ﾔﾏﾀﾞ",
        "given_name_kana": "たろう",
        "birth_date": "1980-01-02",
    }
    subject = {
        "family_name": "山田",
        "given_name": "太郎",
        "family_name_kana": "ヤマダ",
        "given_name_kana": "タロウ",
        "birth_date": "1980-01-02",
    }
    assert set(match_keys(submitted)) == set(match_keys(subject))
    assert len(match_keys(subject)) == 2
    assert match_keys({**subject, "birth_date": None}) == []
    assert normalize_postal_code("１００－０００１") == "1000001"
