"""What became of a request, from the core services' acknowledgements (convention 3).

- intake and linkage each acknowledge once per request; a second acknowledgement (another
  event id) changes nothing: the earliest one stands (by application time, then arrival).
- linkage's `matched` is the number of persons it matched; the anonymizer acknowledges once
  per purged person. The anonymizer counts as applied when its acknowledgements number at
  least linkage's `matched` (at once when linkage matched nobody), so it cannot be applied
  before linkage has acknowledged.
- `received` until the first acknowledgement, `applying` while any service is missing,
  `applied` when all three are in. The order of arrival does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

SERVICES = ("intake", "linkage", "anonymizer")
Status = Literal["received", "applying", "applied"]


@dataclass(frozen=True)
class Ack:
    event_id: str
    service: str
    applied_at: datetime
    matched: int
    purged: dict[str, int] = field(default_factory=dict)
    received_at: datetime | None = None  # when this service stored it: breaks ties


@dataclass(frozen=True)
class Applied:
    at: datetime
    purged: int
    purged_by_kind: dict[str, int]
    matched: int
    acknowledgements: int


@dataclass(frozen=True)
class StatusView:
    status: Status
    applied: dict[str, Applied | None]
    matched_persons: int | None
    anonymizer_acknowledged: int
    applied_at: datetime | None


def aggregate(acks: Iterable[Ack]) -> StatusView:
    by_service: dict[str, list[Ack]] = {s: [] for s in SERVICES}
    seen: set[str] = set()
    for ack in acks:
        if ack.service in by_service and ack.event_id not in seen:
            seen.add(ack.event_id)
            by_service[ack.service].append(ack)
    applied: dict[str, Applied | None] = {
        "intake": _first(by_service["intake"]),
        "linkage": _first(by_service["linkage"]),
        "anonymizer": None,
    }
    linkage = applied["linkage"]
    anonymizer_acks = sorted(by_service["anonymizer"], key=lambda a: a.applied_at)
    if linkage is not None and len(anonymizer_acks) >= linkage.matched:
        kinds = _sum_kinds(anonymizer_acks)
        applied["anonymizer"] = Applied(
            at=max([linkage.at, *(a.applied_at for a in anonymizer_acks)])
            if linkage.matched == 0
            else max(a.applied_at for a in anonymizer_acks),
            purged=sum(kinds.values()),
            purged_by_kind=kinds,
            matched=sum(a.matched for a in anonymizer_acks),
            acknowledgements=len(anonymizer_acks),
        )
    done = [a for a in applied.values() if a is not None]
    if len(done) == len(SERVICES):
        status: Status = "applied"
    elif done or seen:
        status = "applying"
    else:
        status = "received"
    return StatusView(
        status=status,
        applied=applied,
        matched_persons=linkage.matched if linkage is not None else None,
        anonymizer_acknowledged=len(anonymizer_acks),
        applied_at=max(a.at for a in done) if status == "applied" else None,
    )


def _first(acks: list[Ack]) -> Applied | None:
    if not acks:
        return None
    first = min(acks, key=lambda a: (a.applied_at, a.received_at or a.applied_at, a.event_id))
    return Applied(
        at=first.applied_at,
        purged=sum(first.purged.values()),
        purged_by_kind=dict(first.purged),
        matched=first.matched,
        acknowledgements=len(acks),
    )


def _sum_kinds(acks: list[Ack]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for ack in acks:
        for kind, n in ack.purged.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return kinds
