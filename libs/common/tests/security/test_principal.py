from __future__ import annotations

import pytest

from kiban_common.security import Principal, PrincipalKind

CANARY = "山田太郎-CANARY"


@pytest.mark.parametrize(
    ("subject", "kind", "ident"),
    [
        ("institution:1312345678", PrincipalKind.INSTITUTION, "1312345678"),
        ("patient:p-1", PrincipalKind.PATIENT, "p-1"),
        ("researcher:r-1", PrincipalKind.RESEARCHER, "r-1"),
        ("committee:c-1", PrincipalKind.COMMITTEE, "c-1"),
        ("operator:o-1", PrincipalKind.OPERATOR, "o-1"),
        ("operator:a:b", PrincipalKind.OPERATOR, "a:b"),
        ("robot:x", PrincipalKind.UNKNOWN, "x"),
        ("unknown:x", PrincipalKind.UNKNOWN, "x"),
        ("patient:", PrincipalKind.UNKNOWN, ""),
        ("no-prefix", PrincipalKind.UNKNOWN, "no-prefix"),
    ],
)
def test_kind_and_id(subject: str, kind: PrincipalKind, ident: str) -> None:
    principal = Principal.from_subject(subject)
    assert (principal.kind, principal.id, principal.subject) == (kind, ident, subject)


def test_scopes_and_repr_hide_claims() -> None:
    principal = Principal.from_subject(
        "patient:p-1",
        ["optout:write", "optout:read"],
        {"sub": "patient:p-1", "name": CANARY, "birthdate": "1970-01-01"},
    )
    assert principal.has_scope("optout:write")
    assert not principal.has_scope("optout")
    assert principal.claims["name"] == CANARY
    for text in (repr(principal), str(principal), f"{principal}", repr([principal])):
        assert CANARY not in text
        assert "1970-01-01" not in text
        assert "patient:p-1" in text
        assert "optout:read" in text


def test_frozen_and_hashable() -> None:
    principal = Principal.from_subject("operator:o-1", ["a"], {"x": 1})
    with pytest.raises(AttributeError):
        principal.subject = "operator:o-2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        principal.claims["x"] = 2  # type: ignore[index]
    assert principal == Principal.from_subject("operator:o-1", ["a"], {"x": 2})
    assert len({principal, Principal.from_subject("operator:o-1", ["a"])}) == 1
