"""How a clinical FHIR resource becomes one row of the research store.

Only codes, dates, numbers and status codes are kept: free text (`text`, `note`, `display`,
`valueString`, comments) and every reference other than the subject are dropped here, so no
free text can reach a dataset later. Each row carries `source`, a digest of where it came from
(institution, resource type and id), so a record delivered again replaces its earlier row
instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

# FHIR resource type → research table. Datasets name resources; tables follow from them.
TABLE_OF_RESOURCE: dict[str, str] = {
    "Condition": "conditions",
    "Observation": "observations",
    "MedicationRequest": "medications",
    "MedicationStatement": "medications",
    "MedicationAdministration": "medications",
    "MedicationDispense": "medications",
    "Medication": "medications",
    "AllergyIntolerance": "allergies",
    "Procedure": "procedures",
    "Encounter": "encounters",
}
EVENT_TABLES = (
    "conditions",
    "observations",
    "medications",
    "allergies",
    "procedures",
    "encounters",
)

# Columns of each event table besides `person` (the pseudonym) and `source`.
COLUMNS: dict[str, tuple[str, ...]] = {
    "conditions": ("code_system", "code", "onset_date", "recorded_date", "clinical_status"),
    "observations": (
        "code_system",
        "code",
        "effective_date",
        "value_number",
        "value_unit",
        "value_code",
    ),
    "medications": ("code_system", "code", "kind", "authored_on"),
    "allergies": ("code_system", "code", "recorded_date", "criticality", "category"),
    "procedures": ("code_system", "code", "performed_date"),
    "encounters": ("class_code", "start_date", "end_date"),
}
DATE_COLUMNS = {
    "conditions": ("onset_date", "recorded_date"),
    "observations": ("effective_date",),
    "medications": ("authored_on",),
    "allergies": ("recorded_date",),
    "procedures": ("performed_date",),
    "encounters": ("start_date", "end_date"),
}
# The date that places a row in a dataset's period (first that is set).
ROW_DATE = {
    "conditions": ("onset_date", "recorded_date"),
    "observations": ("effective_date",),
    "medications": ("authored_on",),
    "allergies": ("recorded_date",),
    "procedures": ("performed_date",),
    "encounters": ("start_date", "end_date"),
}

_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10": "icd10",
    "http://hl7.org/fhir/sid/icd-10-jp": "icd10",
    "http://jpfhir.jp/fhir/core/CodeSystem/JP_ICD10": "icd10",
    "http://loinc.org": "loinc",
    "urn:oid:1.2.392.200119.4.504": "jlac10",
    "http://jpfhir.jp/fhir/core/CodeSystem/JP_JLAC10": "jlac10",
    "http://snomed.info/sct": "snomed",
    "urn:oid:1.2.392.100495.20.2.74": "yj",
    "urn:oid:1.2.392.200119.4.403.1": "hot",
}
_PREFERRED = {
    "conditions": ("icd10",),
    "observations": ("loinc", "jlac10"),
}
MAX_CODE = 64


@dataclass(frozen=True, slots=True)
class ResearchRow:
    table: str
    source: str
    values: dict[str, Any]


def system_name(system: str | None) -> str:
    if not system:
        return "unknown"
    lowered = system.lower()
    if system in _SYSTEMS:
        return _SYSTEMS[system]
    if "icd-10" in lowered or "icd10" in lowered:
        return "icd10"
    if "jlac10" in lowered:
        return "jlac10"
    if "loinc" in lowered:
        return "loinc"
    return system[:MAX_CODE]


def normalize_icd10(code: str) -> str:
    """Upper case, no spaces, a dot after the category (`I500` → `I50.0`)."""
    value = code.replace(" ", "").upper()
    if "." not in value and len(value) > 3:
        value = f"{value[:3]}.{value[3:]}"
    return value


def parse_date(value: object) -> date | None:
    """FHIR date/dateTime → date; partial dates take the first day (`2024-03` → 2024-03-01)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) >= 10:
            return date.fromisoformat(value[:10])
        if len(value) >= 7:
            return date(int(value[:4]), int(value[5:7]), 1)
        return date(int(value[:4]), 1, 1)
    except ValueError:
        return None


def _coding(concept: object, table: str) -> tuple[str, str] | None:
    if not isinstance(concept, Mapping):
        return None
    codings = [c for c in concept.get("coding") or [] if isinstance(c, Mapping) and c.get("code")]
    if not codings:
        return None
    preferred = _PREFERRED.get(table, ())
    chosen = codings[0]
    for wanted in preferred:
        match = next((c for c in codings if system_name(c.get("system")) == wanted), None)
        if match is not None:
            chosen = match
            break
    system = system_name(chosen.get("system"))
    code = str(chosen["code"])[:MAX_CODE]
    if system == "icd10":
        code = normalize_icd10(code)
    return system, code


def _first_date(resource: Mapping[str, Any], *paths: str) -> date | None:
    for path in paths:
        value: Any = resource
        for part in path.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        parsed = parse_date(value)
        if parsed is not None:
            return parsed
    return None


def _status(concept: object) -> str | None:
    found = _coding(concept, "")
    return found[1] if found else None


def source_of(institution_code: str, resource: Mapping[str, Any]) -> str:
    """Where a row came from, independent of the person it is linked to now."""
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        basis = f"{institution_code}|{resource.get('resourceType')}|{rid}"
    else:
        stripped = {k: v for k, v in resource.items() if k != "subject"}
        basis = f"{institution_code}|" + json.dumps(stripped, sort_keys=True, default=str)
    return hashlib.sha256(basis.encode()).hexdigest()


def flatten(institution_code: str, resource: Mapping[str, Any]) -> ResearchRow | None:
    """The research row of one clinical resource, or None for what the store does not keep."""
    kind = resource.get("resourceType")
    table = TABLE_OF_RESOURCE.get(kind) if isinstance(kind, str) else None
    if table is None:
        return None
    values: dict[str, Any]
    if table == "encounters":
        klass = resource.get("class")
        values = {
            "class_code": str(klass.get("code"))[:MAX_CODE]
            if isinstance(klass, Mapping) and klass.get("code")
            else None,
            "start_date": _first_date(resource, "period.start"),
            "end_date": _first_date(resource, "period.end"),
        }
    else:
        concept_key = "code"
        if table == "medications":
            concept_key = "medicationCodeableConcept" if kind != "Medication" else "code"
        coding = _coding(resource.get(concept_key), table)
        if coding is None:
            return None
        values = {"code_system": coding[0], "code": coding[1]}
        if table == "conditions":
            values["onset_date"] = _first_date(
                resource, "onsetDateTime", "onsetPeriod.start", "onsetDate"
            )
            values["recorded_date"] = _first_date(resource, "recordedDate")
            values["clinical_status"] = _status(resource.get("clinicalStatus"))
        elif table == "observations":
            values.update(_observation_value(resource))
            values["effective_date"] = _first_date(
                resource, "effectiveDateTime", "effectivePeriod.start", "issued"
            )
        elif table == "medications":
            values["kind"] = kind
            values["authored_on"] = _first_date(
                resource,
                "authoredOn",
                "effectiveDateTime",
                "effectivePeriod.start",
                "whenHandedOver",
            )
        elif table == "allergies":
            values["recorded_date"] = _first_date(resource, "recordedDate", "onsetDateTime")
            criticality = resource.get("criticality")
            values["criticality"] = criticality if isinstance(criticality, str) else None
            category = resource.get("category")
            values["category"] = (
                str(category[0])[:MAX_CODE] if isinstance(category, list) and category else None
            )
        elif table == "procedures":
            values["performed_date"] = _first_date(
                resource, "performedDateTime", "performedPeriod.start"
            )
    return ResearchRow(table, source_of(institution_code, resource), values)


def _observation_value(resource: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"value_number": None, "value_unit": None, "value_code": None}
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, Mapping) and isinstance(quantity.get("value"), int | float):
        out["value_number"] = float(quantity["value"])
        unit = quantity.get("code") or quantity.get("unit")
        out["value_unit"] = str(unit)[:MAX_CODE] if unit else None
    elif isinstance(resource.get("valueInteger"), int):
        out["value_number"] = float(resource["valueInteger"])
    elif isinstance(resource.get("valueBoolean"), bool):
        out["value_code"] = "true" if resource["valueBoolean"] else "false"
    else:
        coding = _coding(resource.get("valueCodeableConcept"), "")
        if coding is not None:
            out["value_code"] = coding[1]
    # valueString is free text: never kept.
    return out


def normalize_postal(postal_code: str | None) -> str | None:
    if not postal_code:
        return None
    digits = postal_code.replace("-", "")
    return digits if digits.isdigit() and len(digits) in (3, 7) else None
