"""The pure parts of a build: hierarchies that ship in the repo, cohort selection, flattening
of FHIR resources, rare codes, date processing and the privacy check (no I/O)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiban_anonymizer.domain import hierarchies as h
from kiban_anonymizer.domain.cohort import code_matches, in_period
from kiban_anonymizer.domain.dataset import (
    BuildFailed,
    Options,
    Person,
    Request,
    Snapshot,
    build,
    cohort_of,
)
from kiban_anonymizer.domain.engine import Hierarchy
from kiban_anonymizer.domain.research import flatten, normalize_icd10, normalize_postal

REFERENCE = date(2024, 6, 1)


def test_age_is_top_coded_at_90_and_banded() -> None:
    assert h.age_at(date(1930, 1, 1), REFERENCE) == "90+"
    assert h.age_at(date(1980, 6, 2), REFERENCE) == "43"
    assert h.age_at(None, REFERENCE) == h.UNKNOWN
    rows = {r[0]: r for r in h.age_rows(["43", "90+", "87", h.UNKNOWN])}
    assert rows["43"] == ["43", "40-44", "40-49", "40-59", "*"]
    assert rows["87"] == ["87", "85-89", "80-89", "80-89", "*"]
    assert rows["90+"] == ["90+", "90+", "90+", "90+", "*"]
    Hierarchy.from_rows(list(rows.values()))  # a valid tree for the engine


def test_dates_generalize_to_month_year_and_five_year_span() -> None:
    assert h.month_rows(["2021-03"]) == [["2021-03", "2021", "2020-2024", "*"]]
    assert h.year_rows(["2019"]) == [["2019", "2015-2019", "*"]]


def test_postal_code_generalizes_to_three_digits_prefecture_and_region() -> None:
    assert h.postal_rows(["1000001", "0600001", "9800011"]) == [
        ["0600001", "060", "Hokkaido", "Hokkaido", "*"],
        ["1000001", "100", "Tokyo", "Kanto", "*"],
        ["9800011", "980", "Miyagi", "Tohoku", "*"],
    ]
    assert h.postal_area("5300001") == "530"
    assert h.postal_area(None) == h.UNKNOWN
    assert h.prefecture("0100001") is not None
    assert h.prefecture("0100001").name == "Akita"
    # every 3-digit prefix in use maps to exactly one of the 47 prefectures
    names = {h.prefecture(f"{n:03d}") for n in range(1, 1000)}
    assert len({p.jis_code for p in names if p is not None}) == 47


def test_icd10_generalizes_to_category_block_and_chapter() -> None:
    assert h.icd10_levels("I50.0") == ["I50.0", "I50", "I30-I52", "chapter IX", "*"]
    assert h.icd10_levels("E11.9") == ["E11.9", "E11", "E10-E14", "chapter IV", "*"]
    assert h.icd10_levels("Q87.4")[2:4] == ["Q80-Q89", "chapter XVII"]
    assert h.icd10_levels("S72.0")[3] == "chapter XIX"
    Hierarchy.from_rows(h.icd10_rows(["I50.0", "I50.9", "I10", "E11.9", "Q87.4"]))


def test_cohort_patterns_and_period() -> None:
    assert code_matches("I50.0", ["I50*"])
    assert code_matches("i500", ["I50*"])
    assert not code_matches("I51.0", ["I50*"])
    assert code_matches("E11.9", ["E11.9"])
    assert not code_matches("E11.0", ["E11.9"])
    assert in_period(date(2021, 1, 1), date(2020, 1, 1), date(2021, 12, 31))
    assert not in_period(date(2022, 1, 1), date(2020, 1, 1), date(2021, 12, 31))
    conditions = [
        {"person": "a", "code": "I50.0", "onset_date": date(2021, 1, 1), "recorded_date": None},
        {"person": "b", "code": "I50.0", "onset_date": date(2019, 1, 1), "recorded_date": None},
        {"person": "c", "code": "E11.9", "onset_date": date(2021, 1, 1), "recorded_date": None},
    ]
    request = Request(
        kind="anonymized",
        resources=["Patient"],
        condition_codes=["I50*"],
        period_start=date(2020, 1, 1),
        period_end=date(2024, 1, 1),
    )
    assert cohort_of(conditions, ["a", "b", "c"], request) == ["a"]


def test_flatten_keeps_codes_dates_and_values_and_drops_free_text() -> None:
    row = flatten(
        "1312345678",
        {
            "resourceType": "Condition",
            "id": "c1",
            "code": {
                "coding": [
                    {"system": "http://example.org/local", "code": "X1", "display": "secret"},
                    {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I500"},
                ],
                "text": "secret",
            },
            "onsetDateTime": "2021-03-04T10:00:00+09:00",
            "note": [{"text": "secret"}],
        },
    )
    assert row is not None
    assert row.table == "conditions"
    assert row.values["code"] == "I50.0"
    assert row.values["code_system"] == "icd10"
    assert row.values["onset_date"] == date(2021, 3, 4)
    assert "secret" not in repr(row)
    assert flatten("1", {"resourceType": "Patient", "id": "x"}) is None
    assert flatten("1", {"resourceType": "Condition", "code": {"text": "only text"}}) is None
    assert normalize_icd10("i50 0") == "I50.0"
    assert normalize_postal("100-0001") == "1000001"
    assert normalize_postal("abc") is None


def _snapshot(n: int, seed: int, *, rare: bool = True) -> Snapshot:
    rng = random.Random(seed)
    persons: dict[str, Person] = {}
    conditions: list[dict[str, Any]] = []
    for i in range(n):
        p = f"p{i:05d}" + "x" * 16
        persons[p] = Person(
            p,
            date(rng.randint(1930, 1990), rng.randint(1, 12), 1),
            rng.choice(["male", "female"]),
            rng.choice(["1000001", "1500002", "5300001", "0600001"]),
            date(2023, 1, 1) if i % 7 == 0 else None,
        )
        conditions.append(_condition(p, rng.choice(["I50.0", "I50.9", "I50.1"]), rng))
        conditions.append(_condition(p, "I10", rng))
        if rare and i == 0:
            conditions.append(_condition(p, "Q87.4", rng))
    return Snapshot(persons, {"conditions": conditions})


def _condition(person: str, code: str, rng: random.Random) -> dict[str, Any]:
    return {
        "person": person,
        "code_system": "icd10",
        "code": code,
        "onset_date": date(2021, 1, 1) + timedelta(days=rng.randint(0, 700)),
        "recorded_date": None,
        "clinical_status": "active",
    }


ANONYMIZED = Request(
    kind="anonymized", resources=["Patient", "Condition"], condition_codes=["I50*"]
)


def test_rare_diagnoses_are_generalized_up_or_suppressed() -> None:
    dataset = build(_snapshot(80, 1), ANONYMIZED, Options(REFERENCE, rng=random.Random(1)))
    conditions = next(t for t in dataset.tables if t.name == "conditions")
    codes = Counter(r[conditions.columns.index("code")] for r in conditions.rows)
    assert not any(str(c).startswith("Q87") for c in codes)
    assert dataset.report["suppressed"]["rare_code_rows"] >= 1


def test_shifted_dates_keep_intervals_within_a_person() -> None:
    snapshot = _snapshot(60, 2, rare=False)
    options = Options(REFERENCE, date_mode="shift", shift_days=100, rng=random.Random(2))
    dataset = build(snapshot, ANONYMIZED, options)
    conditions = next(t for t in dataset.tables if t.name == "conditions")
    persons = next(t for t in dataset.tables if t.name == "persons")
    assert len(persons.rows) == dataset.report["persons"]
    by_person: dict[str, list[date]] = {}
    for row in conditions.rows:
        by_person.setdefault(row[0], []).append(date.fromisoformat(row[3]))
    originals: dict[str, list[date]] = {}
    for r in snapshot.rows["conditions"]:
        originals.setdefault(r["person"], []).append(r["onset_date"])
    spans = Counter(max(d) - min(d) for d in originals.values())
    released = Counter(max(d) - min(d) for d in by_person.values())
    assert released
    assert not released - spans
    assert any(span > timedelta(0) for span in released)
    assert dataset.report["dates"] == {"mode": "shift", "shift_days": 100}


def test_a_cohort_smaller_than_k_fails() -> None:
    with pytest.raises(BuildFailed, match="fewer persons than k=5"):
        build(_snapshot(4, 3), ANONYMIZED, Options(REFERENCE))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(min_value=0, max_value=60),
    k=st.integers(min_value=2, max_value=8),
    seed=st.integers(min_value=0, max_value=10_000),
    method=st.sampled_from(["optimal", "local"]),
)
def test_an_anonymized_dataset_is_k_anonymous_or_not_built(
    n: int, k: int, seed: int, method: Any
) -> None:
    request = Request(
        kind="anonymized", resources=["Patient", "Condition"], condition_codes=["I50*"], k=k
    )
    try:
        dataset = build(_snapshot(n, seed), request, Options(REFERENCE, method=method))
    except BuildFailed:
        return
    persons = next(t for t in dataset.tables if t.name == "persons")
    classes = Counter(tuple(row[1:5]) for row in persons.rows)
    assert min(classes.values()) >= k
    assert dataset.achieved_k is not None
    assert dataset.achieved_k >= k
