"""FHIR parsing on realistic bundles: JP Core with kana, Synthea-shaped R4, and bad input."""

from __future__ import annotations

import copy

import pytest
from intake_builders import CODE, bundle, jp_patient, observation, synthea_bundle

from kiban_intake.domain.fhir import FhirInvalid, parse_bundle


def test_jp_core_patient_gives_kanji_kana_identifiers_and_insurance() -> None:
    patient = jp_patient("A001", deceased="2025-02-01T09:30:00+09:00")
    parsed = parse_bundle(bundle("collection", patient, observation("Patient/p-A001")), CODE)
    [group] = parsed.groups
    assert group.patient_id == "A001"
    assert group.identity == {
        "institution_patient_id": "A001",
        "family_name": "山田",
        "given_name": "太郎",
        "family_name_kana": "ヤマダ",
        "given_name_kana": "タロウ",
        "birth_date": "1980-01-02",
        "sex": "male",
        "postal_code": "100-0001",
        "address": "東京都千代田区千代田1-1",
        "insurance_numbers": ["12345678"],
        "deceased_on": "2025-02-01",
    }
    assert [r["resourceType"] for r in group.resources] == ["Observation"]


def test_synthea_style_bundle_without_kana_is_parsed_and_non_clinical_entries_ignored() -> None:
    parsed = parse_bundle(synthea_bundle(), CODE)
    [group] = parsed.groups
    assert group.patient_id == "mr-7"
    assert group.identity["family_name"] == "Synthetic123"
    assert group.identity["family_name_kana"] is None
    assert group.identity["insurance_numbers"] == []
    assert group.identity["postal_code"] == "01101"
    assert sorted(r["resourceType"] for r in group.resources) == ["Encounter", "Observation"]
    assert parsed.ignored == 3  # Organization, Practitioner, Claim


@pytest.mark.parametrize(
    ("mutate", "expression"),
    [
        (lambda b: b.update(resourceType="Patient"), "resourceType"),
        (lambda b: b.update(type="searchset"), "Bundle.type"),
        (
            lambda b: b["entry"][1]["resource"].update(effectiveDateTime="2025-13-45"),
            "Bundle.entry[1].resource.effectiveDateTime",
        ),
        (
            lambda b: b["entry"][0]["resource"].update(birthDate="1980-02-30"),
            "Bundle.entry[0].resource.birthDate",
        ),
        (
            lambda b: b["entry"][1]["resource"].update(subject={"reference": "Patient/nobody"}),
            "Bundle.entry[1].resource.subject.reference",
        ),
        (
            lambda b: b["entry"][1]["resource"].update(resourceType="Nonsense"),
            "Bundle.entry[1].resource.resourceType",
        ),
        (
            lambda b: b["entry"][0]["resource"].update(identifier=[]),
            "Bundle.entry[0].resource.identifier",
        ),
        (lambda b: b["entry"][1]["resource"].update(bogus=1), "Bundle.entry[1].resource.bogus"),
    ],
)
def test_invalid_fhir_names_the_element_and_never_the_value(mutate, expression) -> None:  # type: ignore[no-untyped-def]
    document = bundle("batch", jp_patient("A001"), observation("Patient/p-A001"))
    bad = copy.deepcopy(document)
    mutate(bad)
    with pytest.raises(FhirInvalid) as caught:
        parse_bundle(bad, CODE)
    expressions = [i.expression for i in caught.value.issues]
    assert expression in expressions
    text = repr([i.diagnostics for i in caught.value.issues])
    for secret in ("山田", "1980-02-30", "2025-13-45", "nobody"):
        assert secret not in text
