"""The identity as received and its normalized comparison forms."""

from __future__ import annotations

import sys
from dataclasses import dataclass

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


def normalize(identity: Identity) -> Normalized:
    """All comparison forms of `identity`; pure and deterministic."""
    family_exact, family_norm = _text.latin_or_kanji(identity.family_name)
    given_exact, given_norm = _text.latin_or_kanji(identity.given_name)
    family_kana = _text.kana(identity.family_name_kana)
    given_kana = _text.kana(identity.given_name_kana)
    # A name given only in kana (or half-width kana in the kanji field) is also its reading.
    if family_kana is None and family_norm is not None:
        family_kana = _text.kana(family_norm) if _all_kana(family_norm) else None
    if given_kana is None and given_norm is not None:
        given_kana = _text.kana(given_norm) if _all_kana(given_norm) else None
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
        family_exact=_intern(family_exact),
        family_norm=_intern(family_norm),
        family_kana=_intern(family_kana),
        family_fold=_intern(_text.fold_kana(family_kana)),
        given_exact=_intern(given_exact),
        given_norm=_intern(given_norm),
        given_kana=_intern(given_kana),
        given_fold=_intern(_text.fold_kana(given_kana)),
        birth_date=_intern(_fields.birth_date(identity.birth_date)),
        sex=_fields.sex(identity.sex),
        postal_code=_intern(_fields.postal_code(identity.postal_code)),
        address=_fields.address(identity.address),
        insurance=tuple(numbers),
        households=tuple(households),
        institution_patient_id=identity.institution_patient_id,
    )


def _all_kana(text: str) -> bool:
    return all("\u30a1" <= ch <= "\u30fc" for ch in text)
