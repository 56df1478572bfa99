"""Generalization hierarchies: ARX rows and files, functions, and their invariants."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiban_anonymizer.domain.engine import Hierarchy

ADULT = Path(__file__).resolve().parents[3] / "bench" / "anonymizer" / "data"


def test_arx_rows_give_one_level_per_column_with_star_on_top() -> None:
    h = Hierarchy.from_rows([["Male", "*"], ["Female", "*"]])
    assert h.height == 2
    assert h.generalize("Male", 0) == "Male"
    assert h.generalize("Female", 1) == "*"
    assert h.ncp[0].tolist() == [0.0, 0.0]
    assert h.ncp[1].tolist() == [1.0]


def test_a_star_level_is_added_when_the_top_has_several_labels() -> None:
    h = Hierarchy.from_rows([["a", "x"], ["b", "x"], ["c", "y"]])
    assert h.height == 3
    assert [h.generalize(v, 2) for v in "abc"] == ["*", "*", "*"]
    # NCP = (leaves under the node - 1) / (leaves - 1)
    assert h.ncp[1].tolist() == [0.5, 0.0]


def test_arx_file_of_adult_age_has_five_levels() -> None:
    h = Hierarchy.from_arx_file(ADULT / "adult_hierarchy_age.csv")
    assert h.height == 5
    assert len(h) == 100
    # the CSV is the mapping, not the label text (labels are shifted by one year)
    assert h.generalize("25", 1) == "20-24"
    assert h.generalize("25", 4) == "*"


def test_from_function_builds_age_bands_and_dates() -> None:
    ages = Hierarchy.from_function(
        [str(a) for a in range(100)],
        [lambda v: f"{int(v) // 10 * 10}-{int(v) // 10 * 10 + 9}", lambda v: "*"],
    )
    assert ages.generalize("37", 1) == "30-39"
    dates = Hierarchy.from_function(
        ["2024-01-05", "2024-01-20", "2024-02-01", "2023-12-31"],
        [lambda d: d[:7], lambda d: d[:4]],
    )
    assert dates.height == 4
    assert dates.generalize("2024-01-20", 1) == "2024-01"
    assert dates.generalize("2024-02-01", 2) == "2024"
    assert dates.generalize("2023-12-31", 3) == "*"


def test_icd10_chain_from_function() -> None:
    codes = ["I50.0", "I50.9", "I21.4", "E11.9"]
    h = Hierarchy.from_function(codes, [lambda c: c[:3], lambda c: c[0], lambda c: "*"])
    assert h.generalize("I50.9", 1) == "I50"
    assert h.generalize("I21.4", 2) == "I"
    assert h.leaf_count[2].tolist() == [3, 1]


def test_a_label_with_two_parents_is_refused() -> None:
    with pytest.raises(ValueError, match="not a tree"):
        Hierarchy.from_rows([["a", "x", "p"], ["b", "x", "q"]])


def test_ragged_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="levels"):
        Hierarchy.from_rows([["a", "x", "*"], ["b", "*"]])


def test_a_value_missing_from_the_hierarchy_is_named_by_column_never_by_value() -> None:
    h = Hierarchy.from_rows([["a", "*"]])
    with pytest.raises(ValueError, match="not in its hierarchy") as info:
        h.codes(["a", "Secret-Value"], "diagnosis")
    assert "diagnosis" in str(info.value)
    assert "Secret-Value" not in str(info.value)
