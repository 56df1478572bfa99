"""The pure rules: workflow, decision rule, certification days, code patterns."""

from __future__ import annotations

from datetime import date

import pytest

from kiban_review.domain.certification import (
    Certification,
    CertificationState,
    certification_state,
)
from kiban_review.domain.register import approval_number
from kiban_review.domain.rule import CRITERIA, Ballot, Expertise, Vote, proposed_decision, refusals
from kiban_review.domain.spec import is_code_pattern, organization_key
from kiban_review.domain.workflow import IllegalTransition, Status, check_transition

NAT, HUM, PUB = (
    Expertise.NATURAL_SCIENCE,
    Expertise.HUMANITIES_SOCIAL_SCIENCE,
    Expertise.GENERAL_PUBLIC,
)
PASS = dict.fromkeys(CRITERIA, True)


def ballot(expertise: Expertise, vote: Vote = Vote.APPROVE, **failed: bool) -> Ballot:
    return Ballot(expertise, vote, {**PASS, **failed})


def codes(decision: Status, ballots: list[Ballot], quorum: int = 3) -> list[str]:
    return [r.code for r in refusals(decision, ballots, quorum)]


LEGAL = [
    (Status.SUBMITTED, Status.UNDER_REVIEW),
    (Status.UNDER_REVIEW, Status.APPROVED),
    (Status.UNDER_REVIEW, Status.REJECTED),
    (Status.UNDER_REVIEW, Status.REVISE),
    (Status.REVISE, Status.RESUBMITTED),
    (Status.RESUBMITTED, Status.UNDER_REVIEW),
]


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("target", list(Status))
def test_only_the_workflow_transitions_are_legal(current: Status, target: Status) -> None:
    if (current, target) in LEGAL:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_approval_with_quorum_of_all_groups_and_majority_is_allowed() -> None:
    assert codes(Status.APPROVED, [ballot(NAT), ballot(HUM), ballot(PUB)]) == []


def test_missing_general_public_member_cannot_approve_even_with_quorum() -> None:
    ballots = [ballot(NAT), ballot(NAT), ballot(HUM), ballot(HUM)]
    assert codes(Status.APPROVED, ballots) == ["expertise_group_missing"]
    assert "general_public" in refusals(Status.APPROVED, ballots, 3)[0].message
    # and not any other decision either: the committee is not properly constituted
    assert codes(Status.REJECTED, ballots) == ["expertise_group_missing"]


def test_below_quorum_cannot_decide() -> None:
    ballots = [ballot(NAT), ballot(HUM), ballot(PUB)]
    assert codes(Status.APPROVED, ballots, quorum=4) == ["quorum_not_met"]
    assert codes(Status.REVISE, ballots, quorum=4) == ["quorum_not_met"]
    assert codes(Status.REVISE, ballots, quorum=3) == []


def test_majority_failing_a_criterion_blocks_approval_despite_approve_votes() -> None:
    ballots = [
        ballot(NAT, publication_fairness=False),
        ballot(HUM, publication_fairness=False),
        ballot(PUB),
    ]
    assert codes(Status.APPROVED, ballots) == ["criterion_failed"]
    assert "publication_fairness" in refusals(Status.APPROVED, ballots, 3)[0].message


def test_a_criterion_failed_by_exactly_half_is_not_failed_by_a_majority() -> None:
    ballots = [
        ballot(NAT, provision_lawful=False),
        ballot(HUM, provision_lawful=False),
        ballot(PUB),
        ballot(PUB),
    ]
    assert codes(Status.APPROVED, ballots) == []


def test_approval_needs_a_strict_majority_of_approve_votes() -> None:
    tie = [ballot(NAT), ballot(HUM), ballot(PUB, Vote.REVISE), ballot(NAT, Vote.REJECT)]
    assert codes(Status.APPROVED, tie) == ["no_majority_to_approve"]
    assert codes(Status.REVISE, tie) == []


def test_proposed_decision_follows_the_votes() -> None:
    assert proposed_decision([ballot(NAT), ballot(HUM), ballot(PUB)], 3) is Status.APPROVED
    rejecting = [ballot(NAT, Vote.REJECT), ballot(HUM, Vote.REJECT), ballot(PUB)]
    assert proposed_decision(rejecting, 3) is Status.REJECTED
    split = [ballot(NAT, Vote.REJECT), ballot(HUM, Vote.REVISE), ballot(PUB)]
    assert proposed_decision(split, 3) is Status.REVISE


def test_certification_is_valid_through_its_expiry_day_and_not_after() -> None:
    cert = [Certification(date(2025, 4, 1), date(2026, 3, 31))]
    assert certification_state(cert, date(2025, 4, 1)) is CertificationState.VALID
    assert certification_state(cert, date(2026, 3, 31)) is CertificationState.VALID
    assert certification_state(cert, date(2026, 4, 1)) is CertificationState.EXPIRED
    assert certification_state(cert, date(2025, 3, 31)) is CertificationState.NOT_YET_VALID
    assert certification_state([], date(2026, 1, 1)) is CertificationState.NOT_CERTIFIED


def test_a_renewed_certification_covers_the_gap_of_an_expired_one() -> None:
    certs = [
        Certification(date(2023, 4, 1), date(2026, 3, 31)),
        Certification(date(2026, 4, 1), date(2029, 3, 31)),
    ]
    assert certification_state(certs, date(2026, 4, 1)) is CertificationState.VALID


@pytest.mark.parametrize("pattern", ["I50*", "I50", "I50.9", "E11.65", "C34*", "8842", "J45-1"])
def test_well_formed_code_patterns(pattern: str) -> None:
    assert is_code_pattern(pattern)


@pytest.mark.parametrize(
    "pattern", ["", "*", "*I50", "I*50", "I50**", "I50 *", " I50", "I50%", "I50?", "I5_0", "X" * 40]
)
def test_malformed_code_patterns(pattern: str) -> None:
    assert not is_code_pattern(pattern)


def test_organizations_compare_across_width_case_and_spacing() -> None:
    assert organization_key("ｅｘａｍｐｌｅ  University ") == organization_key("Example University")
    assert organization_key("Example University") != organization_key("Example Univ")


def test_approval_numbers_are_per_year_and_zero_padded() -> None:
    assert approval_number(2026, 1) == "2026-0001"
    assert approval_number(2026, 12345) == "2026-12345"
