"""Which release a file, or a leaked subset of its rows, came from (rule 21).

Every anonymized release carries person ids drawn at random for that release, so its ids occur
in no other release: a handful of rows is enough to name the release, hence its recipient.
Pseudonymized releases keep ids stable per application (so a cohort can be followed), so their
rows name the application, and with it the recipient, and the releases that carried them.

`judge` ranks the releases whose ids occur in the file. A release is a contender when it holds
at least half as many of the file's ids as the best one (random ids may collide now and then;
a collision is a few ids, not half a file). One contender → that release; several contenders of
one application → that application; otherwise the file is ambiguous and all are listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    FILE = "file"  # the file is byte for byte a file of one release
    RELEASE = "release"  # its rows came from one release
    APPLICATION = "application"  # its rows came from the releases of one application
    AMBIGUOUS = "ambiguous"
    NONE = "none"


@dataclass(frozen=True)
class Candidate:
    release_id: str
    application_id: str
    recipient: str | None
    kind: str
    status: str
    matched: int  # distinct ids of the file found in this release


@dataclass(frozen=True)
class TraceResult:
    verdict: Verdict
    ids_in_file: int
    matches: tuple[Candidate, ...] = ()
    contenders: tuple[Candidate, ...] = ()
    file_name: str | None = None  # for `Verdict.FILE`: the release's file it is
    notes: tuple[str, ...] = field(default=())

    @property
    def release_id(self) -> str | None:
        return self.contenders[0].release_id if len(self.contenders) == 1 else None

    @property
    def application_id(self) -> str | None:
        apps = {c.application_id for c in self.contenders}
        return apps.pop() if len(apps) == 1 else None

    @property
    def recipient(self) -> str | None:
        recipients = {c.recipient for c in self.contenders}
        return recipients.pop() if len(recipients) == 1 else None

    @property
    def coverage(self) -> float:
        """Share of the file's ids found in the best release."""
        if not self.ids_in_file or not self.matches:
            return 0.0
        return self.matches[0].matched / self.ids_in_file


def judge(
    ids_in_file: int,
    candidates: Sequence[Candidate],
    *,
    exact: Candidate | None = None,
    exact_name: str | None = None,
    notes: Sequence[str] = (),
) -> TraceResult:
    ranked = tuple(sorted(candidates, key=lambda c: (-c.matched, c.release_id)))
    if exact is not None:
        return TraceResult(
            Verdict.FILE, ids_in_file, ranked, (exact,), file_name=exact_name, notes=tuple(notes)
        )
    if not ranked or ranked[0].matched == 0:
        return TraceResult(Verdict.NONE, ids_in_file, (), (), notes=tuple(notes))
    best = ranked[0].matched
    contenders = tuple(c for c in ranked if 2 * c.matched >= best)
    if len(contenders) == 1:
        verdict = Verdict.RELEASE
    elif len({c.application_id for c in contenders}) == 1:
        verdict = Verdict.APPLICATION
    else:
        verdict = Verdict.AMBIGUOUS
    return TraceResult(verdict, ids_in_file, ranked, contenders, notes=tuple(notes))
