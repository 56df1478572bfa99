"""The validation fast path (`domain/fastcheck.py`) never accepts what `fhir.resources` refuses.

The fast path may only say "certainly valid" or "unsure"; these tests run it against the R4B
models on valid resources of every kept type (where it must answer "certainly valid", or it
would be no fast path) and on thousands of mutations of them (wrong types, bad dates and codes,
nulls, empty values, unknown elements, two choices at once, missing required elements, lists
where one value goes and the reverse): whenever it says valid, the model must agree.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from intake_builders import condition, jp_patient, observation, synthea_bundle

from kiban_intake.domain.fastcheck import certainly_valid
from kiban_intake.domain.fhir import CLINICAL, validate_resource


def _model_accepts(resource: dict[str, Any]) -> bool:
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except Exception:
        return False
    return True


def _corpus() -> list[dict[str, Any]]:
    subject = {"reference": "Patient/p-1"}
    return [
        jp_patient("A1"),
        jp_patient("A2", deceased="2024-05-01T08:00:00+09:00", insurance=None),
        observation("Patient/p-1"),
        condition("Patient/p-1"),
        *(e["resource"] for e in synthea_bundle()["entry"] if e["resource"]["resourceType"]
          in {"Patient", *CLINICAL}),
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": subject,
            "period": {"start": "2025-03-01T09:00:00+09:00", "end": "2025-03-01T10:00:00+09:00"},
        },
        {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"coding": [{"system": "urn:oid:1.2.392.200119.4.403.1",
                                                      "code": "103835401"}]},
            "subject": subject,
            "authoredOn": "2025-03-01",
            "dosageInstruction": [{"text": "1日3回", "timing": {"repeat": {"frequency": 3,
                                                                         "period": 1,
                                                                         "periodUnit": "d"}}}],
        },
        {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                     "allergyintolerance-clinical",
                                           "code": "active"}]},
            "code": {"text": "卵"},
            "patient": subject,
            "recordedDate": "2024-01-02T03:04:05Z",
        },
        {
            "resourceType": "Procedure",
            "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
            "subject": subject,
            "performedPeriod": {"start": "2025-02-01", "end": "2025-02-02"},
        },
        {
            "resourceType": "Observation",
            "status": "final",
            "category": [{"coding": [{"code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": subject,
            "effectivePeriod": {"start": "2025-01-01"},
            "component": [
                {"code": {"text": "sys"}, "valueQuantity": {"value": 120, "unit": "mmHg"}},
                {"code": {"text": "dia"}, "valueInteger": 80},
            ],
            "note": [{"text": "安静時"}],
        },
    ]  # fmt: skip


BAD_VALUES: list[Any] = [
    None, "", " ", "a  b", " lead", "2025-13-01", "2025-02-30", "2025-03-01T10:00:00",
    "24:00", "x" * 70, "not a uri with spaces", 0, -1, 1.5, True, "true", [], {}, ["x"],
    {"value": 1}, [None], [{}], "\x00", "1e999",
]  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*path, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _mutants(resource: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for path in list(_paths(resource))[1:]:
        parent_path, last = path[:-1], path[-1]
        if path == ("resourceType",):
            continue
        for bad in BAD_VALUES:
            m = copy.deepcopy(resource)
            _get(m, parent_path)[last] = copy.deepcopy(bad)
            yield m
        m = copy.deepcopy(resource)  # a list where one value goes / one value for a list
        old = _get(m, path)
        _get(m, parent_path)[last] = old[0] if isinstance(old, list) and old else [old]
        yield m
        if isinstance(last, str):
            m = copy.deepcopy(resource)  # the element removed (required ones must be missed)
            del _get(m, parent_path)[last]
            yield m
            m = copy.deepcopy(resource)  # renamed: unknown, or a primitive extension
            parent = _get(m, parent_path)
            parent[last + "X"] = parent.pop(last)
            yield m
            m = copy.deepcopy(resource)
            parent = _get(m, parent_path)
            parent["_" + last] = parent.pop(last)
            yield m
    for path in _paths(resource):
        target = _get(resource, path)
        if isinstance(target, dict):
            for extra in ({"unknownElement": 1}, {"resourceType": "Patient"},
                          {"valueString": "x"}, {"fhir_comments": ["c"]}):  # fmt: skip
                m = copy.deepcopy(resource)
                _get(m, path).update(copy.deepcopy(extra))
                yield m


@pytest.mark.parametrize("resource", _corpus(), ids=lambda r: str(r["resourceType"]))
def test_valid_resources_take_the_fast_path(resource: dict[str, Any]) -> None:
    model = get_fhir_model_class(resource["resourceType"])
    assert _model_accepts(resource)
    assert certainly_valid(resource, model)


@pytest.mark.parametrize("resource", _corpus(), ids=lambda r: str(r["resourceType"]))
def test_the_fast_path_never_accepts_what_the_models_refuse(resource: dict[str, Any]) -> None:
    model = get_fhir_model_class(resource["resourceType"])
    checked = 0
    for mutant in _mutants(resource):
        if certainly_valid(mutant, model):
            assert _model_accepts(mutant), mutant
        else:
            checked += 1
    assert checked > 50  # the mutations do reach the models


def test_random_nested_garbage_is_never_accepted_when_the_models_refuse() -> None:
    rng = random.Random(3)
    corpus = _corpus()
    for _ in range(3000):
        base = rng.choice(corpus)
        m = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            paths = list(_paths(m))[1:]
            path = rng.choice(paths)
            if path == ("resourceType",):
                continue
            _get(m, path[:-1])[path[-1]] = copy.deepcopy(rng.choice(BAD_VALUES))
        model = get_fhir_model_class(m["resourceType"])
        if certainly_valid(m, model):
            assert _model_accepts(m), m


def test_invalid_resources_still_get_the_models_issue_naming_the_element() -> None:
    bad = observation("Patient/p-1")
    bad["effectiveDateTime"] = "2025-02-30T10:00:00+09:00"
    issues = validate_resource(bad, "Bundle.entry[3].resource")
    assert [i.expression for i in issues] == ["Bundle.entry[3].resource.effectiveDateTime"]
    assert "2025-02-30" not in issues[0].diagnostics
    bad = observation("Patient/p-1")
    bad["valueString"] = "two values"
    assert validate_resource(bad, "Observation")  # a choice given twice is refused
    bad = observation("Patient/p-1")
    del bad["status"]
    assert [i.expression for i in validate_resource(bad, "Observation")] == ["Observation.status"]


def test_odd_primitive_extensions_that_crash_the_models_are_an_issue_not_an_error() -> None:
    bad = jp_patient("A1")
    # A primitive extension given as a string: fhir.resources raises AttributeError here.
    bad["identifier"][1]["_value"] = bad["identifier"][1].pop("value")
    issues = validate_resource(bad, "Bundle.entry[0].resource")
    assert [(i.expression, i.code) for i in issues] == [("Bundle.entry[0].resource", "structure")]
