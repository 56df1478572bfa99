"""The identity as received and its normalized comparison forms."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiban_linkage.domain.matching import _fields, _text

__all__ = ["Identity", "Normalized", "normalize"]


@dataclass(frozen=True)
class Identity:
    """Identity fields exactly as an institution sent them (all optional)."""

    family_name: str | None = None
    given_name: str | None = None
    family_name_kana: str | None = None
    given_name_kana: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postal_code: str | None = None
    address: str | None = None
    insurance_numbers: tuple[str, ...] = ()
    institution_patient_id: str | None = None

    def __repr__(self) -> str:  # identity never reaches a log through repr
        return "Identity(<redacted>)"


@dataclass(frozen=True, slots=True)
class Normalized:
    """Comparison forms of one identity. Any field may be None (missing is no evidence).

    Names: `*_exact` NFKC without separators; `*_norm` also variant-folded and case-folded;
    `*_kana` the reading in katakana; `*_fold` the reading with long vowels and small kana
    folded. `*_key` is the value used for term frequencies and blocking (the folded reading,
    else the normalized spelling). `birth_date` is ISO; `sex` m/f/o; `postal_code` digits;
    `insurance` normalized numbers, `households` the same without the 枝番 branch."""

    family_exact: str | None = None
    family_norm: str | None = None
    family_kana: str | None = None
    family_fold: str | None = None
    given_exact: str | None = None
    given_norm: str | None = None
    given_kana: str | None = None
    given_fold: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postal_code: str | None = None
    address: str | None = None
    insurance: tuple[str, ...] = ()
    households: tuple[str, ...] = ()
    institution_patient_id: str | None = None

    @property
    def family_key(self) -> str | None:
        return self.family_fold or self.family_norm

    @property
    def given_key(self) -> str | None:
        return self.given_fold or self.given_norm

    def __repr__(self) -> str:
        return "Normalized(<redacted>)"


def _intern(value: str | None) -> str | None:
    # Names, dates and postal codes repeat across records: interning keeps a 1M-record index
    # small and makes equality checks identity checks.
    return sys.intern(value) if value is not None else None


_NameForms = tuple[str | None, str | None, str | None, str | None]
_Memo = dict[Any, Any]
_MEMO_SIZE = 1 << 17  # distinct values remembered per field (then the memo starts over)
_names: _Memo = {}
_dates: _Memo = {}
_postals: _Memo = {}
_sexes: _Memo = {}


def _remember(memo: _Memo, key: Any, value: Any) -> Any:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


def _name_forms(spelling: str | None, reading: str | None) -> _NameForms:
    """(exact, normalized, kana, folded kana) of one name, memoized by (spelling, reading):
    names repeat, so most records cost one dictionary lookup per name."""
    got: _NameForms | None = _names.get((spelling, reading))
    if got is not None:
        return got
    exact, norm = _text.latin_or_kanji(spelling)
    kana = _text.kana(reading)
    # A name given only in kana (or half-width kana in the kanji field) is also its reading.
    if kana is None and norm is not None and _all_kana(norm):
        kana = _text.kana(norm)
    forms = (_intern(exact), _intern(norm), _intern(kana), _intern(_text.fold_kana(kana)))
    return _remember(_names, (spelling, reading), forms)  # type: ignore[no-any-return]


def _memoized(memo: _Memo, parse: Callable[[str | None], str | None], value: str | None) -> Any:
    got = memo.get(value, memo)
    if got is not memo:
        return got
    return _remember(memo, value, _intern(parse(value)))


def normalize(identity: Identity) -> Normalized:
    """All comparison forms of `identity`; pure and deterministic."""
    family_exact, family_norm, family_kana, family_fold = _name_forms(
        identity.family_name, identity.family_name_kana
    )
    given_exact, given_norm, given_kana, given_fold = _name_forms(
        identity.given_name, identity.given_name_kana
    )
    numbers: list[str] = []
    households: list[str] = []
    for raw in identity.insurance_numbers:
        parsed = _fields.insurance_number(raw)
        if parsed is None:
            continue
        number, household = parsed
        if number not in numbers:
            numbers.append(number)
        if household is not None and household not in households:
            households.append(household)
    return Normalized(
        family_exact,
        family_norm,
        family_kana,
        family_fold,
        given_exact,
        given_norm,
        given_kana,
        given_fold,
        _memoized(_dates, _fields.birth_date, identity.birth_date),
        _memoized(_sexes, _fields.sex, identity.sex),
        _memoized(_postals, _fields.postal_code, identity.postal_code),
        _fields.address(identity.address),
        tuple(numbers),
        tuple(households),
        identity.institution_patient_id,
    )


def _all_kana(text: str) -> bool:
    return all("\u30a1" <= ch <= "\u30fc" for ch in text)
