"""Who may ask for what: the rules a stop request must pass before anything is stored.

Requesters (rule 9), the token scope each needs, and where the subject comes from:

- `self`: `optout:self` on a patient token. The subject is the token's verified claims; a body
  subject may only repeat them (else 403) and add `postal_code` / `institution_patient_id`.
- `guardian`: the guardian's own patient token (`optout:self`) or a counter (`optout:window`).
  The subject is the body's and must be under `guardian_age_limit` (18) on the request date.
- `bereaved_family`: the family member's own patient token (`optout:self`) or a counter. The
  subject is the body's and must carry `deceased_on`.
- `institution_window`: `optout:window` on an `institution:<code>` token; the body's subject.

`scope: institution` limits the effect to one institution: its code is the window's own (a code
in the body must equal it) or, for a patient-app request, the body's `institution_code`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from kiban_optout.domain.subject import (
    Subject,
    SubjectError,
    age_on,
    check_dates,
    claims_subject,
    disagreeing_fields,
    missing_claims,
    normalized_fields,
    parse_subject,
)

Action = Literal["stop", "stop_and_delete"]
Scope = Literal["all", "institution"]
Requester = Literal["self", "guardian", "bereaved_family", "institution_window"]

SELF_SCOPE = "optout:self"
WINDOW_SCOPE = "optout:window"
ADMIN_SCOPE = "admin"
ACTION_RANK: dict[str, int] = {"stop": 1, "stop_and_delete": 2}


class Refused(Exception):
    """A request that is not accepted: the HTTP status, a stable code and a message that names
    fields, never their values."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Caller:
    """The verified principal, reduced to what the rules read."""

    subject: str  # `patient:<id>`, `institution:<code>`, ...
    kind: str
    id: str
    scopes: frozenset[str]
    claims: Mapping[str, Any]


@dataclass(frozen=True)
class Policy:
    guardian_age_limit: int = 18
    institution_code_pattern: str = r"^[0-9]{6,10}$"
    known_institutions: Collection[str] = ()

    def check_institution(self, code: str, field: str = "institution_code") -> str:
        if not re.fullmatch(self.institution_code_pattern, code):
            raise Refused(422, "invalid_institution_code", f"{field}: is not an institution code")
        if self.known_institutions and code not in self.known_institutions:
            raise Refused(422, "unknown_institution", f"{field}: is not a known institution")
        return code


@dataclass(frozen=True)
class Draft:
    """What the caller asked for, before the rules."""

    action: Action
    scope: Scope
    requester: Requester
    institution_code: str | None
    subject: Mapping[str, Any] | None


@dataclass(frozen=True)
class Accepted:
    action: Action
    scope: Scope
    requester: Requester
    institution_code: str | None  # set only with scope `institution`
    subject: Subject


def accept(draft: Draft, caller: Caller, *, today: date, policy: Policy) -> Accepted:
    """The accepted request, or `Refused` naming the first broken rule."""
    _authorize(draft, caller)
    institution = _institution(draft, caller, policy)
    if draft.requester == "self":
        subject = _self_subject(draft, caller, today=today)
    else:
        subject = _body_subject(draft, today=today)
    if draft.requester == "guardian" and age_on(subject.birth_date, today) >= (
        policy.guardian_age_limit
    ):
        raise Refused(
            422,
            "not_a_minor",
            f"subject.birth_date: a guardian may ask only for a person under "
            f"{policy.guardian_age_limit}",
        )
    if draft.requester == "bereaved_family" and subject.deceased_on is None:
        raise Refused(
            422,
            "death_date_required",
            "subject.deceased_on: required when the bereaved family asks",
        )
    return Accepted(
        action=draft.action,
        scope=draft.scope,
        requester=draft.requester,
        institution_code=institution if draft.scope == "institution" else None,
        subject=subject,
    )


def _authorize(draft: Draft, caller: Caller) -> None:
    has_self = SELF_SCOPE in caller.scopes and caller.kind == "patient"
    has_window = WINDOW_SCOPE in caller.scopes and caller.kind == "institution"
    if draft.requester == "self":
        ok, needed = has_self, f"'{SELF_SCOPE}' on a patient token"
    elif draft.requester == "institution_window":
        ok, needed = has_window, f"'{WINDOW_SCOPE}' on an institution token"
    else:
        ok = has_self or has_window
        needed = f"'{SELF_SCOPE}' (patient) or '{WINDOW_SCOPE}' (institution)"
    if not ok:
        raise Refused(
            403, "insufficient_scope", f"requester '{draft.requester}' needs scope {needed}"
        )


def _institution(draft: Draft, caller: Caller, policy: Policy) -> str | None:
    given = draft.institution_code
    if caller.kind == "institution":
        own = policy.check_institution(caller.id, "token subject")
        if given is not None and given != own:
            raise Refused(
                403,
                "institution_mismatch",
                "institution_code: a window may act only for its own institution",
            )
        return own
    if given is not None:
        policy.check_institution(given)
    elif draft.scope == "institution":
        raise Refused(422, "invalid_request", "institution_code: required with scope 'institution'")
    return given


def _body_subject(draft: Draft, *, today: date) -> Subject:
    if draft.subject is None:
        raise Refused(422, "invalid_subject", "subject: is required")
    try:
        return parse_subject(draft.subject, today=today)
    except SubjectError as exc:
        raise Refused(422, "invalid_subject", str(exc)) from None


def _self_subject(draft: Draft, caller: Caller, *, today: date) -> Subject:
    missing = missing_claims(caller.claims)
    if missing:
        raise Refused(
            403,
            "identity_claims_missing",
            f"the token lacks verified claims: {', '.join(missing)}",
        )
    try:
        from_claims = parse_subject(claims_subject(caller.claims), today=today)
    except SubjectError as exc:
        raise Refused(403, "invalid_identity_claims", f"token claim for {exc}") from None
    if draft.subject is None:
        return from_claims
    try:
        given = normalized_fields(draft.subject)
    except SubjectError as exc:
        raise Refused(422, "invalid_subject", str(exc)) from None
    if "deceased_on" in given:
        raise Refused(
            422, "invalid_subject", "subject.deceased_on: not allowed when a person asks for self"
        )
    differing = disagreeing_fields(from_claims, given)
    if differing:
        raise Refused(
            403,
            "subject_mismatch",
            "the subject differs from the token's verified claims in: "
            + ", ".join(f"subject.{f}" for f in differing),
        )
    subject = Subject(
        **{
            **from_claims.as_dict(),
            "birth_date": from_claims.birth_date,
            "deceased_on": None,
            "postal_code": given.get("postal_code"),
            "institution_patient_id": given.get("institution_patient_id"),
        }
    )
    check_dates(subject, today=today)
    return subject


def covers(
    existing_action: str,
    existing_scope: str,
    existing_institution: str | None,
    wanted: Accepted,
) -> bool:
    """An existing request already gives everything `wanted` asks for."""
    scope_ok = existing_scope == "all" or (
        wanted.scope == "institution" and existing_institution == wanted.institution_code
    )
    return scope_ok and ACTION_RANK[existing_action] >= ACTION_RANK[wanted.action]
