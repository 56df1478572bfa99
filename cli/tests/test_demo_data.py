"""The demo's synthetic data: reproducible, valid JP Core as intake reads it, with the people,
spelling variants and cohort size the scenario's checks rely on."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from kiban_cli import demo_data
from kiban_cli.demo import DemoFailed, readable_text, scan_for_identifiers, until
from kiban_intake.domain.fhir import parse_bundle
from kiban_intake.domain.normalize import normalize_name

TODAY = date(2026, 11, 21)
FIRST, SECOND = (i.code for i in demo_data.INSTITUTIONS)


def test_the_same_seed_makes_the_same_people_and_bundles() -> None:
    one, two = demo_data.generate(TODAY), demo_data.generate(TODAY)
    for code in (FIRST, SECOND):
        assert json.dumps(demo_data.bundle(one, code)) == json.dumps(demo_data.bundle(two, code))
    assert one.opted_out.number == two.opted_out.number


def test_intake_reads_every_patient_with_its_local_id_kanji_and_kana() -> None:
    data = demo_data.generate(TODAY)
    for code in (FIRST, SECOND):
        parsed = parse_bundle(demo_data.bundle(data, code), code)
        people = data.at(code)
        assert [g.patient_id for g in parsed.groups] == [p.local_ids[code] for p in people]
        for group, person in zip(parsed.groups, people, strict=True):
            identity = group.identity
            assert identity["birth_date"] == person.birth_date.isoformat()
            assert identity["insurance_numbers"] == [person.insurance_number]
            assert identity["family_name_kana"]
            assert identity["given_name_kana"]
            assert len(group.resources) >= 4
        assert parsed.ignored == 0


def test_people_seen_at_both_have_other_ids_and_other_writings_that_normalize_alike() -> None:
    data = demo_data.generate(TODAY)
    both = [p for p in data.persons if p.at_both]
    assert len(both) >= 10
    assert all(p.local_ids[FIRST] != p.local_ids[SECOND] for p in both)
    assert demo_data.bundle(data, SECOND)["entry"]  # records how the second writes each
    assert {s for p in both for s in p.spelling.values()} == {
        "half-width kana",
        "hiragana",
        "variant kanji",
    }
    for person in both:
        first = demo_data.written_at(person, data, FIRST)
        second = demo_data.written_at(person, data, SECOND)
        assert first != second
        if person.spelling[SECOND] != "variant kanji":  # kana written otherwise, same person
            assert normalize_name(first["family_name_kana"]) == normalize_name(
                second["family_name_kana"]
            )


def test_the_opted_out_person_is_in_the_heart_failure_cohort_at_both_institutions() -> None:
    data = demo_data.generate(TODAY)
    person = data.opted_out
    assert person.at_both
    assert person.heart_failure
    demo_data.bundle(data, SECOND)
    assert person.spelling[SECOND] == "half-width kana"
    # Enough people for a k = 5 anonymized dataset of the I50 cohort after the opt-out.
    assert len(data.heart_failure_persons) - 1 >= 6 * 5
    assert all(p.birth_date <= date(TODAY.year - 18, TODAY.month, TODAY.day) for p in data.persons)
    assert data.notice_date <= date.fromordinal(TODAY.toordinal() - 30)


def test_identifier_list_covers_every_writing_of_every_person() -> None:
    data = demo_data.generate(TODAY)
    needles = demo_data.identifiers(data)
    for person in data.persons:
        for code in person.local_ids:
            written = demo_data.written_at(person, data, code)
            for value in written.values():
                assert value in needles["name"] | needles["kana"]
            assert person.local_ids[code] in needles["patient id"]
        assert person.insurance_number in needles["insurance number"]
        assert person.birth_date.strftime("%Y%m%d") in needles["birth date"]
        assert person.postal_code.replace("-", "") in needles["postal code"]


def test_half_width_and_hiragana_writings() -> None:
    assert demo_data.half_width_kana("サトウ") == "ｻﾄｳ"
    assert demo_data.half_width_kana("ダイスケ") == "ﾀﾞｲｽｹ"
    assert demo_data.hiragana("ヤマザキ") == "やまざき"


def test_parquet_cells_are_read_as_text_for_the_identifier_scan(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"person_id": ["a1"], "note": ["山田太郎"]}), path, compression="zstd")
    assert "山田太郎" in readable_text(path)


def test_identifier_scan_finds_any_writing_in_csv_and_parquet_and_names_only_the_kind(
    tmp_path: Path,
) -> None:
    data = demo_data.generate(TODAY)
    person = data.persons[0]
    needles = demo_data.identifiers(data)
    clean = tmp_path / "clean.csv"
    clean.write_text("person_id,age,sex\n9f2c61d0a4b7e3f812c4d5e6,70-79,male\n", encoding="utf-8")
    leaky = tmp_path / "leaky.csv"
    half = demo_data.half_width_kana(person.family_name_kana)
    leaky.write_text(f"person_id,name\nabc,{half}\n", encoding="utf-8")
    table = tmp_path / "leaky.parquet"
    pq.write_table(
        pa.table({"person_id": ["x"], "born": [person.birth_date.strftime("%Y%m%d")]}), table
    )
    hits = scan_for_identifiers([clean, leaky, table], needles)
    assert set(hits) == {"leaky.csv: kana", "leaky.parquet: birth date"}
    assert all(isinstance(n, int) for n in hits.values())


async def test_until_fails_with_what_was_awaited_after_the_deadline() -> None:
    async def probe() -> dict[str, int]:
        return {"records": 1}

    with pytest.raises(DemoFailed, match="linkage linking every record: not reached"):
        await until("linkage linking every record", probe, lambda s: False, within=0.05)
