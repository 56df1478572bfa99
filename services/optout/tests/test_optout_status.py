"""Status from the three acknowledgements: any order, any repetition, the same answer."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from kiban_optout.domain.status import Ack, aggregate

T0 = datetime(2026, 6, 1, tzinfo=UTC)


def _acks(linkage_matched: int) -> list[Ack]:
    acks = [
        Ack("i1", "intake", T0, matched=1, purged={"submissions": 3}),
        Ack(
            "l1", "linkage", T0 + timedelta(seconds=1), matched=linkage_matched, purged={"links": 2}
        ),
    ]
    acks += [
        Ack(f"a{n}", "anonymizer", T0 + timedelta(seconds=2 + n), matched=1, purged={"rows": 5})
        for n in range(linkage_matched)
    ]
    return acks


@pytest.mark.parametrize("matched", [0, 1, 2])
def test_every_order_and_every_repetition_gives_applied(matched: int) -> None:
    acks = _acks(matched)
    expected = aggregate(acks)
    assert expected.status == "applied"
    assert expected.matched_persons == matched
    for order in itertools.permutations(acks):
        assert aggregate(list(order)) == expected
        assert aggregate(list(order) + list(order)) == expected  # each delivered twice


def test_counts_per_service() -> None:
    view = aggregate(_acks(2))
    intake, linkage, anonymizer = (view.applied[s] for s in ("intake", "linkage", "anonymizer"))
    assert intake is not None
    assert intake.purged == 3
    assert linkage is not None
    assert linkage.purged == 2
    assert anonymizer is not None
    assert anonymizer.purged == 10
    assert anonymizer.purged_by_kind == {"rows": 10}
    assert view.applied_at == T0 + timedelta(seconds=3)


def test_anonymizer_is_not_applied_before_linkage_says_how_many_persons() -> None:
    anonymizer_first = [a for a in _acks(2) if a.service == "anonymizer"]
    view = aggregate(anonymizer_first)
    assert view.status == "applying"
    assert view.applied["anonymizer"] is None
    assert view.matched_persons is None


def test_anonymizer_waits_for_one_acknowledgement_per_matched_person() -> None:
    acks = _acks(2)
    view = aggregate(acks[:-1])  # one anonymizer ack of two
    assert view.status == "applying"
    assert view.applied["anonymizer"] is None
    assert view.anonymizer_acknowledged == 1


def test_a_second_intake_acknowledgement_with_another_id_changes_nothing() -> None:
    acks = _acks(1)
    later = Ack("i2", "intake", T0 + timedelta(hours=1), matched=1, purged={"submissions": 9})
    view = aggregate([*acks, later])
    assert view.applied["intake"] is not None
    assert view.applied["intake"].purged == 3
    assert view.status == "applied"


def test_nothing_acknowledged_is_received_and_some_is_applying() -> None:
    assert aggregate([]).status == "received"
    assert aggregate(_acks(1)[:1]).status == "applying"
