"""The service's match index in memory (`domain.index.VaultIndex`): the engine's candidates
and probabilities by vault record id, replaced and purged records, a staged batch."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from kiban_linkage.domain.index import VaultIndex, key_hashes
from kiban_linkage.domain.matching import (
    Identity,
    MatchIndex,
    MatchModel,
    identity_from_mapping,
    normalize,
)

FAMILY = [("佐藤", "サトウ"), ("鈴木", "スズキ"), ("高橋", "タカハシ"), ("北浦", "キタウラ")]
GIVEN = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("健", "ケン"),
    ("美咲", "ミサキ"),
    ("翔", "ショウ"),
]


@pytest.fixture
def identities(people_of: Callable[..., list[dict[str, Any]]]) -> Callable[..., list[Identity]]:
    """`n` synthetic identities from the names above (conftest's `synthetic_people`)."""

    def make(n: int, seed: int) -> list[Identity]:
        return [
            identity_from_mapping(x) for x in people_of(n, seed=seed, family=FAMILY, given=GIVEN)
        ]

    return make


def _noisy(x: Identity, rng: random.Random) -> Identity:
    """The same person elsewhere: a long-vowel spelling, sometimes moved."""
    moved = rng.random() < 0.3
    return Identity(
        family_name=x.family_name,
        given_name=x.given_name,
        family_name_kana=x.family_name_kana,
        given_name_kana=(x.given_name_kana or "").replace("ウ", "ー") or None,
        birth_date=x.birth_date,
        sex=x.sex,
        postal_code="999-0000" if moved else x.postal_code,
        address=None if moved else x.address,
        insurance_numbers=x.insurance_numbers,
    )


def test_candidates_and_probabilities_are_the_engines(
    identities: Callable[..., list[Identity]],
) -> None:
    people = [normalize(x) for x in identities(400, seed=8)]
    model = MatchModel.default()
    engine, index = MatchIndex(model), VaultIndex()
    engine.add_many(people)
    # vault ids, not positions; half loaded in bulk (the sorted key table), half settled since
    index.put_many([(1000 + i, p) for i, p in enumerate(people[:200])], bulk=True)
    index.compact()
    index.put_many([(1200 + i, p) for i, p in enumerate(people[200:])])
    rng = random.Random(3)
    queries = [normalize(_noisy(x, rng)) for x in identities(400, seed=8)[:100]]
    first = index.stage(queries)
    linked = 0
    for k, query in enumerate(queries):
        found = index.candidates(key_hashes(query), max_block=2000, limit=10_000)
        assert {index.record_id(p) - 1000 for p, _ in found} == engine.candidates(query)
        if not found:
            continue
        positions = np.asarray([p for p, _ in found], dtype=np.int64)
        got = index.probabilities(model, np.full(len(positions), first + k), positions)
        expected = [model.probability(query, people[index.record_id(p) - 1000]) for p, _ in found]
        assert got.tolist() == pytest.approx(expected)
        linked += max(got) >= model.link_threshold
    assert linked >= 80  # the test says something
    before = [sorted(index.candidates(key_hashes(q), max_block=2000, limit=99)) for q in queries]
    index.unstage()
    index.compact()
    after = [sorted(index.candidates(key_hashes(q), max_block=2000, limit=99)) for q in queries]
    assert after == before


def test_a_replaced_identity_takes_a_new_position_and_a_removed_record_is_purged(
    identities: Callable[..., list[Identity]],
) -> None:
    a, b = (normalize(x) for x in identities(2, seed=4))
    index = VaultIndex()
    index.put_many([(1, a), (2, b)], bulk=True)
    index.compact()
    index.put_many([(1, b)])  # record 1 now holds b's identity
    assert len(index) == 2
    assert index.positions == 3
    assert index.candidates(key_hashes(a), max_block=9, limit=9) == []  # a's identity is gone
    assert {
        index.record_id(p) for p, _ in index.candidates(key_hashes(b), max_block=9, limit=9)
    } == {1, 2}
    address = b.address
    assert address is not None
    assert index.remove(2)
    index.purge()
    assert any(address in v for v in index.rows()[1] if isinstance(v, str))  # record 1 keeps it
    assert index.remove(1)
    index.purge()
    assert len(index) == 0
    assert index.candidates(key_hashes(b), max_block=9, limit=9) == []
    values = [v for vocab in index._cols.vocabs.values() for v in vocab.values]
    assert address not in values  # nothing of b stays
    assert b.family_norm not in values
    assert not index.remove(1)


def test_a_staged_batch_is_no_candidate_until_settled_and_forgotten_when_unstaged(
    identities: Callable[..., list[Identity]],
) -> None:
    a, b, c = (normalize(x) for x in identities(3, seed=6))
    index = VaultIndex()
    index.put_many([(1, a)])
    rows = index.rows()
    first = index.stage([b, c])
    assert index.candidates(key_hashes(b), max_block=9, limit=9) == []
    index.unstage()
    assert index.rows() == rows
    assert index.positions == 1
    first = index.stage([b, c])
    # b stored as record 2; c was not stored (blocked, say); then record 2 deleted again
    index.settle([(2, first)], {first: key_hashes(b), first + 1: key_hashes(c)})
    assert {
        index.record_id(p) for p, _ in index.candidates(key_hashes(b), max_block=9, limit=9)
    } == {2}
    assert index.candidates(key_hashes(c), max_block=9, limit=9) == []
    index.stage([c])
    index.settle([(2, None)], {})
    assert len(index) == 1
    assert index.candidates(key_hashes(b), max_block=9, limit=9) == []
