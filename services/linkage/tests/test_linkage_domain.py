"""Pure rules: stripping of forwarded resources, demographics, link and opt-out decisions."""

from __future__ import annotations

import json
from datetime import date

from kiban_linkage.domain.demographics import demographics, postal_code
from kiban_linkage.domain.persons import (
    Scored,
    decide_link,
    decide_optout,
    new_person_key,
    survivor,
)
from kiban_linkage.domain.stripping import strip_resources

PSEUDONYM = "p" * 64

CONDITION = {
    "resourceType": "Condition",
    "id": "cond-0001",
    "meta": {"source": "ehr.example-hospital.jp"},
    "text": {"status": "generated", "div": "<div>山田太郎 心不全</div>"},
    "identifier": [{"system": "urn:local", "value": "MRN-998877"}],
    "subject": {"reference": "Patient/pat-42", "display": "山田 太郎"},
    "encounter": {"reference": "Encounter/enc-7"},
    "recorder": {"reference": "Practitioner/dr-1", "display": "医師 佐藤一郎"},
    "asserter": {"display": "鈴木看護師"},
    "code": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10",
                "code": "I50.0",
                "display": "Congestive heart failure",
            }
        ],
        "text": "心不全（山田さん自宅で発症）",
    },
    "onsetDateTime": "2024-03-01",
    "onsetString": "春先から",
    "note": [{"authorString": "佐藤一郎", "text": "電話 03-1234-5678"}],
    "extension": [{"url": "urn:x", "valueString": "東京都千代田区1-1"}],
}
OBSERVATION = {
    "resourceType": "Observation",
    "id": "obs-1",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
    "subject": {"reference": "Patient/pat-42"},
    "performer": [{"reference": "Practitioner/dr-1", "display": "佐藤一郎"}],
    "valueQuantity": {"value": 142, "unit": "mmHg"},
    "effectiveDateTime": "2024-03-02T09:00:00+09:00",
}


def _hash(kind: str, local: str) -> str:
    return f"h{len(kind)}{len(local)}"


def test_stripping_removes_names_identifiers_practitioners_and_free_text() -> None:
    out = strip_resources(
        [CONDITION, OBSERVATION, {"resourceType": "Practitioner", "id": "dr-1"}],
        pseudonym=PSEUDONYM,
        hash_id=_hash,
    )
    text = json.dumps(out, ensure_ascii=False)
    for secret in (
        "山田",
        "太郎",
        "佐藤",
        "鈴木",
        "MRN-998877",
        "pat-42",
        "dr-1",
        "cond-0001",
        "03-1234",
        "東京都",
        "春先",
        "ehr.example",
        "Practitioner",
    ):
        assert secret not in text, secret
    condition, observation = out
    assert [r["resourceType"] for r in out] == ["Condition", "Observation"]
    assert condition["subject"] == {"reference": f"Patient/{PSEUDONYM}"}
    assert condition["code"] == {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10",
                "code": "I50.0",
                "display": "Congestive heart failure",
            }
        ]
    }
    assert condition["onsetDateTime"] == "2024-03-01"
    assert condition["encounter"] == {"reference": f"Encounter/{_hash('Encounter', 'enc-7')}"}
    assert condition["id"] == _hash("Condition", "cond-0001")
    assert observation["valueQuantity"] == {"value": 142, "unit": "mmHg"}
    assert "performer" not in observation
    assert CONDITION["subject"]["reference"] == "Patient/pat-42"  # input untouched


def test_demographics_keep_only_quasi_identifiers_in_canonical_form() -> None:
    identity = {
        "family_name": "山田",
        "birth_date": "1980-01-02",
        "sex": "male",
        "postal_code": "〒１００ー０００１",
        "address": "東京都千代田区",
        "deceased_on": None,
    }
    assert demographics(identity) == {
        "birth_date": date(1980, 1, 2),
        "sex": "male",
        "postal_code": "100-0001",
        "deceased_on": None,
    }
    assert postal_code("1000001") == "100-0001"
    assert postal_code("not a code") is None
    assert demographics({"sex": "x", "birth_date": "garbage"})["sex"] == "unknown"


def test_link_decision_links_at_threshold_and_keeps_the_band_apart() -> None:
    scored = [
        Scored(1, "a", 0.99),
        Scored(2, "a", 0.5),
        Scored(3, "b", 0.97),
        Scored(4, "c", 0.6),
        Scored(5, "d", 0.1),
    ]
    decision = decide_link(scored, link_threshold=0.95, possible_threshold=0.3)
    assert decision.persons == ("a", "b")
    assert [(s.record_id, s.person_key) for s in decision.possible] == [(4, "c")]


def test_optout_decision_is_ambiguous_when_two_persons_fit_or_one_only_weakly() -> None:
    one = decide_optout([Scored(1, "a", 0.9999)], strict_threshold=0.999, possible_threshold=0.3)
    assert one.matched == ("a",)
    assert not one.ambiguous
    two = decide_optout(
        [Scored(1, "a", 0.9999), Scored(2, "b", 0.9995)],
        strict_threshold=0.999,
        possible_threshold=0.3,
    )
    assert two.ambiguous
    assert two.matched == ()
    weak = decide_optout([Scored(1, "a", 0.9)], strict_threshold=0.999, possible_threshold=0.3)
    assert weak.ambiguous
    nobody = decide_optout([Scored(1, "a", 0.01)], strict_threshold=0.999, possible_threshold=0.3)
    assert nobody.matched == ()
    assert not nobody.ambiguous


def test_person_keys_are_random_and_the_biggest_cluster_survives_a_merge() -> None:
    keys = {new_person_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k) == 32 for k in keys)
    assert survivor([("b", 3), ("a", 1), ("c", 3)]) == "b"
