"""FHIR R4 input: validation with `fhir.resources`, JP Core identity, grouping by patient.

Validation uses the `fhir.resources.R4B` models (FHIR 4.3.0): `fhir.resources` 8 ships R5 as
its default package and R4B as the R4-compatible one; the resources intake accepts (`Patient`,
`Encounter`, `Condition`, `Observation`, `MedicationRequest`, `AllergyIntolerance`,
`Procedure`) have the same structure in R4 4.0.1 and R4B. What the models cannot say — which
identifier is the institution-local patient id, which name is kanji or kana (JP Core's
`iso21090-EN-representation` extension: `IDE` ideographic, `SYL` syllabic), which identifiers
are insurance numbers — is read here.

Problems are `Issue`s with a FHIRPath `expression` naming the element and a message that never
contains the submitted value (it may be a name or a birth date).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from kiban_intake.domain.fastcheck import certainly_valid

PATIENT = "Patient"
# Clinical resources intake keeps and the element that points at their patient.
CLINICAL: Mapping[str, str] = {
    "Encounter": "subject",
    "Condition": "subject",
    "Observation": "subject",
    "MedicationRequest": "subject",
    "AllergyIntolerance": "patient",
    "Procedure": "subject",
}
BUNDLE_TYPES = frozenset({"transaction", "batch", "collection"})

JP_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
# JP Core: 医療機関患者番号 = this OID + "1" + the 10-digit institution code.
JP_PATIENT_ID_OID = "urn:oid:1.2.392.100495.20.3.51."
# JP Core insurance identifiers (被保険者番号 and kin live under .20.3.6x) and their JP FHIR
# system; v2 identifier types for member / beneficiary numbers.
JP_INSURANCE_PREFIXES = (
    "urn:oid:1.2.392.100495.20.3.6",
    "http://jpfhir.jp/fhir/ccs/Idsysmem/JP_Insurance_member",
    "http://jpfhir.jp/fhir/core/IdSystem/insurance",
)
INSURANCE_TYPES = frozenset({"MB", "SB"})
MAX_ISSUES = 20


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome issue: FHIR issue `code` (`structure`, `invalid`, `required`,
    `value`, `not-found`, `business-rule`, `too-long`), the element and a safe message."""

    expression: str
    code: str
    diagnostics: str


class FhirInvalid(Exception):
    """The input is not acceptable FHIR; nothing of it may be stored."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        super().__init__(f"{len(issues)} FHIR issue(s)")
        self.issues = list(issues)


def operation_outcome(issues: Iterable[Issue], severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": i.code,
                "diagnostics": i.diagnostics,
                "expression": [i.expression],
            }
            for i in issues
        ],
    }


@dataclass(slots=True)
class PatientGroup:
    """One patient of a submission: who they are and the clinical resources about them."""

    patient_id: str
    identity: dict[str, Any]
    entry: int  # entry index (bundle) or line number (bulk) of the Patient
    resources: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ParsedBundle:
    type: str
    groups: list[PatientGroup]
    ignored: int  # resources of other types (Organization, Claim, ...) not kept


# -- resources ---------------------------------------------------------------------------------


@cache
def _model(resource_type: str) -> Any:
    try:
        return get_fhir_model_class(resource_type)
    except (ValueError, KeyError, AttributeError):
        return None


def is_fhir_type(resource_type: object) -> bool:
    return isinstance(resource_type, str) and _model(resource_type) is not None


def validate_resource(resource: Mapping[str, Any], path: str) -> list[Issue]:
    """Validate against the R4B model of its `resourceType`; issues name the element.
    Resources the fast path proves valid skip the (slow) model construction."""
    resource_type = resource.get("resourceType")
    model = _model(resource_type) if isinstance(resource_type, str) else None
    if model is None:
        return [Issue(f"{path}.resourceType", "structure", "unknown or missing resourceType")]
    if certainly_valid(resource, model):
        return []  # the fast path (domain/fastcheck.py); the models judge everything else
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_issue(path, error) for error in exc.errors()[:MAX_ISSUES]]
    except (AttributeError, TypeError, ValueError, KeyError):
        # fhir_core's own validators fail this way on some malformed primitive extensions
        return [Issue(path, "structure", "the resource has a malformed element")]
    return []


def _issue(path: str, error: Mapping[str, Any]) -> Issue:
    element = path
    for part in error.get("loc", ()):
        if part == "resource_type":
            part = "resourceType"
        element += f"[{part}]" if isinstance(part, int) else f".{part}"
    kind = str(error.get("type", "value_error"))
    code = {"missing": "required", "extra_forbidden": "structure"}.get(kind, "value")
    message = str(error.get("msg", "")) or "invalid value"
    value = error.get("input")
    if isinstance(value, str | int | float) and str(value) and str(value) in message:
        message = f"invalid value ({kind})"
    if "\n" in message:
        message = message.split("\n", 1)[0]
    return Issue(element, code, message)


def patient_reference(resource: Mapping[str, Any]) -> str | None:
    element = CLINICAL.get(str(resource.get("resourceType")), "subject")
    target = resource.get(element)
    if isinstance(target, Mapping):
        ref = target.get("reference")
        if isinstance(ref, str) and ref:
            return ref
    return None


def reference_keys(resource: Mapping[str, Any], full_url: object = None) -> list[str]:
    """What a reference to this Patient may look like: its fullUrl, `Patient/<id>`."""
    keys: list[str] = []
    if isinstance(full_url, str) and full_url:
        keys.append(full_url)
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        keys.append(f"Patient/{rid}")
    return keys


def normalize_reference(ref: str) -> str:
    """An absolute `.../Patient/<id>` URL (not `urn:`) → `Patient/<id>`."""
    if ref.startswith(("http://", "https://")) and "/Patient/" in ref:
        return "Patient/" + ref.rsplit("/Patient/", 1)[1].split("/_history", 1)[0]
    return ref


# -- JP Core patient identity ------------------------------------------------------------------


def jp_patient_id_system(institution_code: str) -> str:
    return f"{JP_PATIENT_ID_OID}1{institution_code}"


def _type_codes(identifier: Mapping[str, Any]) -> set[str]:
    codes: set[str] = set()
    typ = identifier.get("type")
    if isinstance(typ, Mapping):
        for coding in typ.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                codes.add(coding["code"])
    return codes


def local_patient_id(patient: Mapping[str, Any], institution_code: str) -> str | None:
    """JP Core's institution patient number for this institution, else a medical record
    number (`type` MR, as Synthea writes it)."""
    identifiers = [i for i in patient.get("identifier") or () if isinstance(i, Mapping)]
    system = jp_patient_id_system(institution_code)
    for ident in identifiers:
        if ident.get("system") == system and isinstance(ident.get("value"), str):
            return str(ident["value"])
    for ident in identifiers:
        if "MR" in _type_codes(ident) and isinstance(ident.get("value"), str):
            return str(ident["value"])
    return None


def insurance_numbers(patient: Mapping[str, Any]) -> list[str]:
    numbers: list[str] = []
    for ident in patient.get("identifier") or ():
        if not isinstance(ident, Mapping) or not isinstance(ident.get("value"), str):
            continue
        system = ident.get("system")
        if (isinstance(system, str) and system.startswith(JP_INSURANCE_PREFIXES)) or (
            _type_codes(ident) & INSURANCE_TYPES
        ):
            numbers.append(ident["value"])
    return numbers


def _representation(name: Mapping[str, Any]) -> str | None:
    for ext in name.get("extension") or ():
        if isinstance(ext, Mapping) and ext.get("url") == JP_REPRESENTATION:
            code = ext.get("valueCode")
            return code if isinstance(code, str) else None
    return None


def _name_parts(name: Mapping[str, Any]) -> tuple[str | None, str | None]:
    family = name.get("family") if isinstance(name.get("family"), str) else None
    given_list = [g for g in name.get("given") or () if isinstance(g, str)]
    given = " ".join(given_list) if given_list else None
    if family is None and given is None and isinstance(name.get("text"), str):
        family, _, rest = name["text"].replace("\u3000", " ").partition(" ")
        given = rest or None
    return family, given


def identity_of(patient: Mapping[str, Any], patient_id: str) -> dict[str, Any]:
    """IDENTITY of convention 1: values as received, missing ones null."""
    kanji: tuple[str | None, str | None] = (None, None)
    kana: tuple[str | None, str | None] = (None, None)
    plain: tuple[str | None, str | None] | None = None
    for name in patient.get("name") or ():
        if not isinstance(name, Mapping):
            continue
        rep = _representation(name)
        if rep == "IDE":
            kanji = _name_parts(name)
        elif rep == "SYL":
            kana = _name_parts(name)
        elif plain is None and name.get("use") in (None, "official", "usual"):
            plain = _name_parts(name)
    if kanji == (None, None) and plain is not None:
        kanji = plain  # Synthea and other non-JP generators: one unmarked name
    address = next((a for a in patient.get("address") or () if isinstance(a, Mapping)), {})
    gender = patient.get("gender")
    deceased = patient.get("deceasedDateTime")
    return {
        "institution_patient_id": patient_id,
        "family_name": kanji[0],
        "given_name": kanji[1],
        "family_name_kana": kana[0],
        "given_name_kana": kana[1],
        "birth_date": patient.get("birthDate")
        if isinstance(patient.get("birthDate"), str)
        else None,
        "sex": gender if gender in ("male", "female", "other", "unknown") else "unknown",
        "postal_code": address.get("postalCode")
        if isinstance(address.get("postalCode"), str)
        else None,
        "address": _address_text(address),
        "insurance_numbers": insurance_numbers(patient),
        "deceased_on": deceased[:10] if isinstance(deceased, str) else None,
    }


def _address_text(address: Mapping[str, Any]) -> str | None:
    if isinstance(address.get("text"), str):
        return str(address["text"])
    parts = [address.get("state"), address.get("city"), *(address.get("line") or ())]
    text = "".join(p for p in parts if isinstance(p, str))
    return text or None


# -- bundles -----------------------------------------------------------------------------------


def load_json(raw: bytes) -> Any:
    """A JSON value, or `ValueError` (`UnicodeDecodeError` included). orjson parses it (twice as
    fast as `json`); what orjson refuses and `json` takes (NaN, UTF-16/32 bodies) is left
    to `json`, so the set of bodies accepted is the standard library's. (orjson reads an
    integer beyond 64 bits as a float, where `json` keeps an int: no FHIR integer is that
    large, and a decimal that long loses its digits in a float under either parser.)"""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def parse_json(body: bytes) -> Any:
    try:
        return load_json(body)
    except ValueError:
        raise FhirInvalid([Issue("Bundle", "structure", "the body is not valid JSON")]) from None


def parse_bundle(document: Any, institution_code: str) -> ParsedBundle:
    """Validate a whole Bundle and group its resources by patient, or raise `FhirInvalid`
    with every issue found (up to MAX_ISSUES)."""
    if not isinstance(document, Mapping):
        raise FhirInvalid([Issue("Bundle", "structure", "the body must be a JSON object")])
    if document.get("resourceType") != "Bundle":
        raise FhirInvalid([Issue("resourceType", "structure", "resourceType must be 'Bundle'")])
    bundle_type = document.get("type")
    if bundle_type not in BUNDLE_TYPES:
        raise FhirInvalid(
            [Issue("Bundle.type", "value", "type must be transaction, batch or collection")]
        )
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise FhirInvalid([Issue("Bundle.entry", "structure", "entry must be an array")])
    issues: list[Issue] = []
    groups: list[PatientGroup] = []
    by_ref: dict[str, PatientGroup] = {}
    by_id: dict[str, PatientGroup] = {}
    clinical: list[tuple[int, dict[str, Any]]] = []
    ignored = 0
    for i, entry in enumerate(entries):
        path = f"Bundle.entry[{i}]"
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, dict):
            issues.append(Issue(f"{path}.resource", "required", "each entry needs a resource"))
            continue
        rtype = resource.get("resourceType")
        if rtype == PATIENT:
            found = validate_resource(resource, f"{path}.resource")
            if found:
                issues.extend(found)
                continue
            pid = local_patient_id(resource, institution_code)
            if pid is None:
                issues.append(_no_local_id(f"{path}.resource"))
                continue
            if pid in by_id:
                issues.append(
                    Issue(f"{path}.resource.identifier", "business-rule", "duplicate Patient")
                )
                continue
            group = PatientGroup(pid, identity_of(resource, pid), i)
            groups.append(group)
            by_id[pid] = group
            for key in reference_keys(resource, entry.get("fullUrl")):
                by_ref[key] = group
        elif rtype in CLINICAL:
            clinical.append((i, resource))
        elif is_fhir_type(rtype):
            ignored += 1
        else:
            issues.append(
                Issue(f"{path}.resource.resourceType", "structure", "unknown resourceType")
            )
    for i, resource in clinical:
        path = f"Bundle.entry[{i}].resource"
        found = validate_resource(resource, path)
        if found:
            issues.extend(found)
            continue
        ref = patient_reference(resource)
        owner = by_ref.get(normalize_reference(ref)) if ref else None
        if owner is None:
            element = CLINICAL[str(resource["resourceType"])]
            issues.append(
                Issue(
                    f"{path}.{element}.reference",
                    "not-found",
                    "must reference a Patient in this bundle",
                )
            )
            continue
        owner.resources.append(resource)
    if issues:
        raise FhirInvalid(issues[:MAX_ISSUES])
    return ParsedBundle(str(bundle_type), groups, ignored)


def _no_local_id(path: str) -> Issue:
    return Issue(
        f"{path}.identifier",
        "required",
        "no institution-local patient id (JP Core system "
        f"{JP_PATIENT_ID_OID}1<institution code>, or an identifier of type MR)",
    )


no_local_id = _no_local_id
