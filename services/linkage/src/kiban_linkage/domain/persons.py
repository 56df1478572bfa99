"""Person keys and the decisions taken on scored candidates.

A person key is random (never derived from identity); what leaves the linkage unit is its keyed
hash, the pseudonym. A decision only says which persons a record or an opt-out subject belongs
to; the caller does the I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field


def new_person_key() -> str:
    """128 random bits as hex."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Scored:
    """A candidate vault record and the probability that it is the same person."""

    record_id: int
    person_key: str
    probability: float


@dataclass(frozen=True)
class LinkDecision:
    """Persons the record links to (two or more: they merge) and the best candidate record of
    every other person in the "possible" band (recorded for review, never linked)."""

    persons: tuple[str, ...]
    possible: tuple[Scored, ...] = field(default=())


def decide_link(
    scored: Iterable[Scored], *, link_threshold: float, possible_threshold: float
) -> LinkDecision:
    linked: dict[str, float] = {}
    band: dict[str, Scored] = {}
    for s in scored:
        if s.probability >= link_threshold:
            linked[s.person_key] = max(linked.get(s.person_key, 0.0), s.probability)
        elif s.probability >= possible_threshold:
            best = band.get(s.person_key)
            if best is None or s.probability > best.probability:
                band[s.person_key] = s
    persons = tuple(sorted(linked, key=lambda k: (-linked[k], k)))
    possible = tuple(
        sorted(
            (s for k, s in band.items() if k not in linked),
            key=lambda s: (-s.probability, s.record_id),
        )
    )
    return LinkDecision(persons=persons, possible=possible)


@dataclass(frozen=True)
class OptoutDecision:
    """`matched`: the persons the subject is (at the strict threshold). `ambiguous`: the
    request cannot be applied without an operator (several persons fit, or one fits only in
    the band below the strict threshold). `candidates`: every person considered, best first."""

    matched: tuple[str, ...]
    ambiguous: bool
    candidates: tuple[tuple[str, float], ...]


def decide_optout(
    scored: Iterable[Scored], *, strict_threshold: float, possible_threshold: float
) -> OptoutDecision:
    best: dict[str, float] = {}
    for s in scored:
        best[s.person_key] = max(best.get(s.person_key, 0.0), s.probability)
    candidates = tuple(
        sorted(
            ((k, p) for k, p in best.items() if p >= possible_threshold),
            key=lambda kp: (-kp[1], kp[0]),
        )
    )
    strict = tuple(k for k, p in candidates if p >= strict_threshold)
    # Two people who both fit a subject (same name, birth date and sex, no address to tell
    # them apart) are not guessed between; neither is a single weaker fit.
    ambiguous = len(strict) > 1 or len(candidates) > len(strict)
    return OptoutDecision(
        matched=() if ambiguous else strict, ambiguous=ambiguous, candidates=candidates
    )


def survivor(persons: Iterable[tuple[str, int]]) -> str:
    """The person that absorbs the others in a merge: the one with the most records (ties: the
    smallest key), so the fewest records move."""
    return min(persons, key=lambda kc: (-kc[1], kc[0]))[0]
