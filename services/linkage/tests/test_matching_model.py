"""The Fellegi–Sunter model: EM on generated data, the possible band, serialization, and the
scalar (service) and vectorized (batch) paths agreeing."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from kiban_linkage.domain.matching import (
    FIELDS,
    Identity,
    MatchIndex,
    MatchModel,
    Normalized,
    blocking_keys,
    compare,
    dedupe,
    normalize,
)
from kiban_linkage.domain.matching._blocking import candidate_pairs_dedupe
from kiban_linkage.domain.matching._columns import Columns, compare_pairs

_FAMILY = [
    ("佐藤", "サトウ"),
    ("鈴木", "スズキ"),
    ("高橋", "タカハシ"),
    ("田中", "タナカ"),
    ("伊藤", "イトウ"),
    ("渡辺", "ワタナベ"),
    ("山本", "ヤマモト"),
    ("中村", "ナカムラ"),
]
_RARE = [
    (f"{a}{b}", f"{ka}{kb}")
    for a, ka in (
        ("北", "キタ"),
        ("南", "ミナミ"),
        ("東", "ヒガシ"),
        ("西", "ニシ"),
        ("浅", "アサ"),
        ("深", "フカ"),
        ("梅", "ウメ"),
        ("菊", "キク"),
    )
    for b, kb in (
        ("沢", "サワ"),
        ("谷", "タニ"),
        ("浦", "ウラ"),
        ("塚", "ツカ"),
        ("瀬", "セ"),
        ("倉", "クラ"),
        ("江", "エ"),
        ("尾", "オ"),
    )
]
_GIVEN = [
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("健", "ケン"),
    ("陽子", "ヨウコ"),
    ("誠", "マコト"),
    ("美咲", "ミサキ"),
    ("翔", "ショウ"),
    ("恵", "メグミ"),
    ("隆", "タカシ"),
    ("愛", "アイ"),
    ("浩", "ヒロシ"),
    ("舞", "マイ"),
    ("大輔", "ダイスケ"),
    ("彩", "アヤ"),
]


def _people(n: int, seed: int) -> list[Identity]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        family, fk = rng.choice(_FAMILY + _RARE)
        given, gk = rng.choice(_GIVEN)
        out.append(
            Identity(
                family_name=family,
                given_name=given,
                family_name_kana=fk,
                given_name_kana=gk,
                birth_date=f"{rng.randrange(1940, 2015)}-{rng.randrange(1, 13):02d}-"
                f"{rng.randrange(1, 29):02d}",
                sex=rng.choice(["male", "female"]),
                postal_code=f"{rng.randrange(10**7):07d}",
                address=(
                    f"東京都新宿区{rng.choice('西東南北')}町{rng.randrange(1, 9)}-{i % 97 + 1}-{i}"
                ),
                insurance_numbers=(f"0613{rng.randrange(10**4):04d}-{i}-{rng.randrange(999)}-01",),
                institution_patient_id=f"P{i}",
            )
        )
    return out


def _noisy(x: Identity, rng: random.Random) -> Identity:
    given_kana = x.given_name_kana or ""
    if rng.random() < 0.2:
        given_kana = given_kana.replace("ウ", "ー")
    birth = x.birth_date
    if rng.random() < 0.05 and birth:
        birth = birth[:-1] + str((int(birth[-1]) + 1) % 10)
    return Identity(
        family_name=x.family_name if rng.random() > 0.1 else None,
        given_name=x.given_name,
        family_name_kana=x.family_name_kana,
        given_name_kana=given_kana,
        birth_date=birth,
        sex=x.sex,
        postal_code=x.postal_code if rng.random() > 0.15 else f"{rng.randrange(10**7):07d}",
        address=x.address if rng.random() > 0.15 else "大阪府大阪市北区1-1-1",
        insurance_numbers=x.insurance_numbers if rng.random() > 0.2 else ("99999999-1-1-01",),
    )


@pytest.fixture(scope="module")
def generated() -> tuple[list[Normalized], list[int]]:
    rng = random.Random(3)
    people = _people(1500, seed=1)
    records: list[Normalized] = []
    owners: list[int] = []
    for pid, person in enumerate(people):
        records.append(normalize(person))
        owners.append(pid)
        if rng.random() < 0.6:
            records.append(normalize(_noisy(person, rng)))
            owners.append(pid)
    return records, owners


def test_em_recovers_sensible_m_and_u_without_labels(
    generated: tuple[list[Normalized], list[int]],
) -> None:
    records, _ = generated
    model = MatchModel.fit(records, seed=0)
    m, u = model.m, model.u
    # matches agree on the birth date ~95% of the time, random pairs almost never
    assert m["birth_date"][0] > 0.85
    assert u["birth_date"][0] < 0.001
    # names: matches agree (exact or at a kana level), non-matches mostly differ
    assert m["family_name"][0] + m["family_name"][2] > 0.7
    assert u["family_name"][0] < 0.2
    assert u["given_name"][-1] + u["given_name"][-2] > 0.8
    # insurer changes: a different number is common among matches (~20%) but rarer than agreement
    assert 0.5 < m["insurance"][0] < 0.95
    assert 0.05 < m["insurance"][3] < 0.4
    # every level of every field is a probability distribution
    for f in FIELDS:
        assert sum(m[f]) == pytest.approx(1.0)
        assert sum(u[f]) == pytest.approx(1.0)
    assert 0 < model.prior < 0.01


def test_dedupe_finds_the_planted_duplicates(generated: tuple[list[Normalized], list[int]]) -> None:
    records, owners = generated
    result = dedupe(records)
    owner = np.asarray(owners)
    links = result.links()
    true = owner[result.left] == owner[result.right]
    planted = len(records) - len(set(owners))
    assert (links & true).sum() / max(links.sum(), 1) >= 0.99
    assert ((result.probability >= result.model.possible_threshold) & true).sum() >= 0.97 * planted


def test_common_surnames_count_for_less_than_rare_ones() -> None:
    model = MatchModel.default()
    assert model.tf_weight("family_name", "サト") < 0 < model.tf_weight("family_name", "キタウラ")
    sato = normalize(
        Identity(
            family_name="佐藤",
            family_name_kana="サトウ",
            birth_date="1970-01-01",
            given_name_kana="タロウ",
        )
    )
    kitaura = normalize(
        Identity(
            family_name="北浦",
            family_name_kana="キタウラ",
            birth_date="1970-01-01",
            given_name_kana="タロウ",
        )
    )
    assert model.probability(kitaura, kitaura) > model.probability(sato, sato)


def _shared_name_pair() -> tuple[Normalized, Normalized]:
    a = normalize(
        Identity(
            family_name="佐藤",
            given_name="太郎",
            family_name_kana="サトウ",
            given_name_kana="タロウ",
            birth_date="1980-01-02",
            sex="male",
            postal_code="160-0023",
            address="東京都新宿区西新宿1-2-3",
            insurance_numbers=("06130017-12-345-01",),
        )
    )
    b = normalize(
        Identity(
            family_name="佐藤",
            given_name="太郎",
            family_name_kana="サトウ",
            given_name_kana="タロウ",
            birth_date="1980-01-02",
            sex="male",
            postal_code="530-0001",
            address="大阪府大阪市北区梅田3-1-1",
            insurance_numbers=("27130045-88-901-01",),
        )
    )
    return a, b


def test_same_common_name_and_birth_date_with_other_address_and_insurer_is_possible_only() -> None:
    a, b = _shared_name_pair()
    for model in (
        MatchModel.default(),
        MatchModel.default().with_thresholds(link=0.9, possible=0.2),
    ):
        p = model.probability(a, b)
        assert model.possible_threshold <= p < model.link_threshold
        assert model.classify(p) == "possible"


def test_same_person_with_the_address_or_insurer_kept_is_linked() -> None:
    a, _ = _shared_name_pair()
    moved_only = normalize(
        Identity(
            family_name="佐藤",
            given_name="太郎",
            family_name_kana="サトウ",
            given_name_kana="ﾀﾛｰ",
            birth_date="昭和55年1月2日",
            sex="male",
            postal_code="〒530-0001",
            address="大阪府大阪市北区梅田3-1-1",
            insurance_numbers=("06130017 記号12 番号345 枝番01",),
        )
    )
    model = MatchModel.default()
    assert model.classify(model.probability(a, moved_only)) == "link"
    assert model.classify(model.probability(moved_only, a)) == "link"


def test_twins_sharing_household_and_birth_date_are_never_linked() -> None:
    base = dict(
        family_name="田中",
        family_name_kana="タナカ",
        birth_date="2001-05-05",
        sex="male",
        postal_code="160-0023",
        address="東京都新宿区西新宿1-2-3",
    )
    a = normalize(
        Identity(
            given_name="翔",
            given_name_kana="ショウ",
            insurance_numbers=("06130017-12-345-01",),
            **base,
        )
    )
    b = normalize(
        Identity(
            given_name="健",
            given_name_kana="ケン",
            insurance_numbers=("06130017-12-345-02",),
            **base,
        )
    )
    model = MatchModel.default()
    assert model.classify(model.probability(a, b)) != "link"


def test_unrelated_people_are_below_the_band() -> None:
    a, _ = _shared_name_pair()
    other = normalize(
        Identity(
            family_name="北浦",
            given_name="花子",
            family_name_kana="キタウラ",
            given_name_kana="ハナコ",
            birth_date="1990-07-07",
            sex="female",
        )
    )
    model = MatchModel.default()
    assert model.classify(model.probability(a, other)) == "none"


def test_model_round_trips_through_json(generated: tuple[list[Normalized], list[int]]) -> None:
    records, _ = generated
    model = MatchModel.fit(records[:400], seed=1)
    again = MatchModel.from_dict(json.loads(json.dumps(model.to_dict(), ensure_ascii=False)))
    assert again.to_dict() == model.to_dict()
    assert again.probability(records[0], records[1]) == model.probability(records[0], records[1])


def test_from_dict_rejects_other_versions() -> None:
    data = MatchModel.default().to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version"):
        MatchModel.from_dict(data)


def test_scalar_and_vectorized_paths_agree(generated: tuple[list[Normalized], list[int]]) -> None:
    records, _ = generated
    ia, ib, _ = candidate_pairs_dedupe(records)
    cols = Columns.build(records)
    vector = compare_pairs(cols, ia, ib)
    scalar = np.asarray([compare(records[i], records[j]) for i, j in zip(ia, ib, strict=True)])
    assert (vector == scalar).all()
    result = dedupe(records, min_probability=0.0)
    model = result.model
    for k in range(0, len(result.left), 97):
        i, j = int(result.left[k]), int(result.right[k])
        assert result.probability[k] == pytest.approx(model.probability(records[i], records[j]))


def test_a_typo_keeps_at_least_one_blocking_key() -> None:
    a = normalize(
        Identity(
            family_name_kana="タカハシ",
            given_name_kana="タロウ",
            birth_date="1980-01-02",
            postal_code="1600023",
        )
    )
    typo_name = normalize(
        Identity(
            family_name_kana="タカバシ",
            given_name_kana="タロウ",
            birth_date="1980-01-02",
            postal_code="1600023",
        )
    )
    typo_date = normalize(
        Identity(
            family_name_kana="タカハシ",
            given_name_kana="タロウ",
            birth_date="1980-01-20",
            postal_code="1600023",
        )
    )
    for other in (typo_name, typo_date):
        assert set(blocking_keys(a)) & set(blocking_keys(other))


def test_match_index_finds_the_person_added_earlier() -> None:
    people = [normalize(x) for x in _people(300, seed=5)]
    index = MatchIndex(MatchModel.default())
    index.add_many(people)
    query = normalize(_noisy(_people(300, seed=5)[42], random.Random(1)))
    found = index.match(query)
    assert found
    assert found[0][0] == 42


def test_batch_blocking_on_codes_equals_the_string_keys(
    generated: tuple[list[Normalized], list[int]],
) -> None:
    records, _ = generated
    by_key: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        for key in set(blocking_keys(r)):
            by_key.setdefault(key, []).append(i)
    expected = {(a, b) for members in by_key.values() for a in members for b in members if a < b}
    ia, ib, _ = candidate_pairs_dedupe(records)
    assert set(zip(ia.tolist(), ib.tolist(), strict=True)) == expected


def test_batch_matching_equals_matching_one_record_at_a_time() -> None:
    people = [normalize(x) for x in _people(400, seed=8)]
    rng = random.Random(3)
    stream = [normalize(_noisy(x, rng)) for x in _people(400, seed=8)[:150]]
    fresh = _people(100, seed=9)
    # new people seen twice in the stream: the second must meet the first within a batch
    stream += [normalize(x) for x in fresh] + [normalize(_noisy(x, rng)) for x in fresh[:40]]
    rng.shuffle(stream)
    model = MatchModel.fit(people + stream, seed=0)
    one, batch = MatchIndex(model), MatchIndex(model)
    one.add_many(people)
    batch.add_many(people)
    expected = []
    for record in stream:
        expected.append(one.match(record))
        one.add(record)
    got = [m for k in range(0, len(stream), 64) for m in batch.match_and_add(stream[k : k + 64])]
    assert sum(bool(m) for m in expected) >= 180  # the test says something
    assert [[pos for pos, _ in m] for m in got] == [[pos for pos, _ in m] for m in expected]
    for g, e in zip(got, expected, strict=True):
        assert [p for _, p in g] == pytest.approx([p for _, p in e])
