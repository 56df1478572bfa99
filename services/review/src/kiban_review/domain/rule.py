"""The committee's decision rule (RULES.md 17–18).

A decision is taken on the reviews of the current round. Any decision needs a quorum: at least
`quorum` reviews, among them at least one member of each expertise group (natural science,
humanities and social science, general public). Approval further needs a strict majority of
approve votes and no criterion failed (marked false) by a strict majority of the reviews.
A rejection or a request to revise needs the quorum only: the committee may always decline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from kiban_review.domain.workflow import Status


class Expertise(StrEnum):
    NATURAL_SCIENCE = "natural_science"
    HUMANITIES_SOCIAL_SCIENCE = "humanities_social_science"
    GENERAL_PUBLIC = "general_public"


class Vote(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    REVISE = "revise"


# The five criteria of every review (RULES.md 18), in order.
CRITERIA = (
    "purpose",
    "scientific_validity",
    "publication_fairness",
    "benefit_management",
    "provision_lawful",
)


@dataclass(frozen=True)
class Ballot:
    """One member's review in a round."""

    expertise: Expertise
    vote: Vote
    criteria: Mapping[str, bool]


@dataclass(frozen=True)
class Refusal:
    """Why the rule does not allow a decision: a stable code and a message without personal
    data."""

    code: str
    message: str


def refusals(decision: Status, ballots: Sequence[Ballot], quorum: int) -> list[Refusal]:
    """Everything that stops `decision` under the rule; empty when it is allowed."""
    found: list[Refusal] = []
    cast = len(ballots)
    if cast < quorum:
        found.append(
            Refusal(
                "quorum_not_met",
                f"a decision needs at least {quorum} reviews in this round; {cast} cast",
            )
        )
    present = {b.expertise for b in ballots}
    for group in Expertise:
        if group not in present:
            found.append(
                Refusal(
                    "expertise_group_missing",
                    f"a decision needs a review by a member of the {group.value} group",
                )
            )
    if decision is Status.APPROVED:
        approving = sum(1 for b in ballots if b.vote is Vote.APPROVE)
        if not _majority(approving, cast):
            found.append(
                Refusal(
                    "no_majority_to_approve",
                    f"approval needs a majority of approve votes; {approving} of {cast}",
                )
            )
        for criterion in CRITERIA:
            failed = sum(1 for b in ballots if not b.criteria.get(criterion, False))
            if cast and _majority(failed, cast):
                found.append(
                    Refusal(
                        "criterion_failed",
                        f"the criterion {criterion} was failed by a majority; {failed} of {cast}",
                    )
                )
    return found


def proposed_decision(ballots: Sequence[Ballot], quorum: int) -> Status:
    """The decision the votes carry, for a chair who does not name one: approval if the rule
    allows it, rejection if a majority voted to reject, otherwise a request to revise."""
    if not refusals(Status.APPROVED, ballots, quorum):
        return Status.APPROVED
    rejecting = sum(1 for b in ballots if b.vote is Vote.REJECT)
    return Status.REJECTED if _majority(rejecting, len(ballots)) else Status.REVISE


def _majority(count: int, total: int) -> bool:
    return total > 0 and 2 * count > total
