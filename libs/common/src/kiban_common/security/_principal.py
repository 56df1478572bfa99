"""Who is calling: the verified subject of a bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class PrincipalKind(StrEnum):
    """The prefix of the token subject (`<kind>:<id>`)."""

    INSTITUTION = "institution"
    PATIENT = "patient"
    RESEARCHER = "researcher"
    COMMITTEE = "committee"
    OPERATOR = "operator"
    UNKNOWN = "unknown"


@dataclass(frozen=True, repr=False)
class Principal:
    """A verified caller. `claims` holds every verified claim and may include personal data
    (a patient's token can carry a name and birth date), so `repr` and `str` show the subject
    and scopes only; never log `claims`."""

    subject: str
    kind: PrincipalKind
    id: str
    scopes: frozenset[str]
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), compare=False, hash=False
    )

    @classmethod
    def from_subject(
        cls,
        subject: str,
        scopes: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
    ) -> Principal:
        """Kind and id from `<kind>:<id>`; a prefix that is not a known kind, or an empty id,
        gives `PrincipalKind.UNKNOWN` (and the whole subject as id when there is no `:`)."""
        prefix, sep, rest = subject.partition(":")
        kind = PrincipalKind.UNKNOWN
        if sep and rest and prefix in _KNOWN:
            kind = PrincipalKind(prefix)
        return cls(
            subject=subject,
            kind=kind,
            id=rest if sep else subject,
            scopes=frozenset(scopes),
            claims=MappingProxyType(dict(claims or {})),
        )

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def __repr__(self) -> str:
        return f"Principal(subject={self.subject!r}, scopes={sorted(self.scopes)!r})"

    __str__ = __repr__


_KNOWN = frozenset(k.value for k in PrincipalKind if k is not PrincipalKind.UNKNOWN)
