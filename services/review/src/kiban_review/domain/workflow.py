"""The states of an application and the transitions between them.

```
submitted ──▶ under_review ──▶ approved | rejected | revise
                  ▲                                  │
resubmitted ──────┘ ◀────────────────────────────────┘
```

`approved` and `rejected` are final. Every transition is recorded with its time and actor.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    SUBMITTED = "submitted"
    UNDER_REVIEW = "under_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVISE = "revise"
    RESUBMITTED = "resubmitted"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.SUBMITTED: frozenset({Status.UNDER_REVIEW}),
    Status.RESUBMITTED: frozenset({Status.UNDER_REVIEW}),
    Status.UNDER_REVIEW: frozenset({Status.APPROVED, Status.REJECTED, Status.REVISE}),
    Status.REVISE: frozenset({Status.RESUBMITTED}),
    Status.APPROVED: frozenset(),
    Status.REJECTED: frozenset(),
}
DECISIONS = frozenset({Status.APPROVED, Status.REJECTED, Status.REVISE})
# States in which committee members may file reviews (the first review of a round moves a
# submitted or resubmitted application to under_review).
REVIEWABLE = frozenset({Status.SUBMITTED, Status.RESUBMITTED, Status.UNDER_REVIEW})


class IllegalTransition(Exception):
    def __init__(self, current: Status, target: Status) -> None:
        super().__init__(f"an application in state {current} cannot move to {target}")
        self.current = current
        self.target = target


def check_transition(current: Status, target: Status) -> None:
    """Raise `IllegalTransition` unless `current → target` is in the workflow."""
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
