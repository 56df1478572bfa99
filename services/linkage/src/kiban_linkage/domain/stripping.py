"""Clinical FHIR resources made fit to leave the linkage unit (convention 4).

What goes: names, addresses, telecoms, photos, contacts, identifiers, narrative and free text
(`text`, `note`, `comment`, `description`, `patientInstruction`, any `[x]String` such as
`valueString` or `onsetString`, annotations),
extensions (they carry anything), `meta` and `contained` resources, and every reference to a
person other than the patient (practitioners, related persons: the reference and its display).
Resources that describe a person (`Patient`, `Practitioner`, ...) are dropped whole.

What changes: the patient reference (`subject`, `patient`, `beneficiary`) becomes
`Patient/<pseudonym>`; a resource's own `id` and references between clinical resources are
replaced with keyed hashes (`hash_id`), so the institution's local ids do not travel but the
links between an institution's resources survive.

What stays: resource types, codings (system, code, display of the code), dates, periods,
quantities and statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

PERSON_RESOURCES = frozenset(
    {"Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person", "Group"}
)
_DROPPED_KEYS = frozenset(
    {
        "identifier",
        "name",
        "address",
        "telecom",
        "photo",
        "contact",
        "text",
        "note",
        "comment",
        "description",
        "patientInstruction",
        "valueString",
        "valueAnnotation",
        "extension",
        "modifierExtension",
        "meta",
        "contained",
        "implicitRules",
    }
)
_PATIENT_KEYS = frozenset({"subject", "patient", "beneficiary"})

HashId = Callable[[str, str], str]  # (resource type, local id) -> opaque id


def strip_resources(
    resources: Sequence[Mapping[str, Any]], *, pseudonym: str, hash_id: HashId
) -> list[dict[str, Any]]:
    """The forwardable copies of `resources` (inputs are not modified)."""
    out: list[dict[str, Any]] = []
    for resource in resources:
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or kind in PERSON_RESOURCES:
            continue
        clean = _strip_dict(resource, pseudonym, hash_id)
        if isinstance(resource.get("id"), str):
            clean["id"] = hash_id(kind, resource["id"])
        clean["resourceType"] = kind
        out.append(clean)
    return out


def _strip_dict(node: Mapping[str, Any], pseudonym: str, hash_id: HashId) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS or key == "id" or key.endswith("String"):
            continue
        if key in _PATIENT_KEYS and isinstance(value, Mapping):
            out[key] = {"reference": f"Patient/{pseudonym}"}
            continue
        cleaned = _strip_value(value, pseudonym, hash_id)
        if cleaned is not None:
            out[key] = cleaned
    return out


_LEAVES = (str, int, float, type(None))  # JSON scalars (bool is an int): kept as they are


def _strip_value(value: Any, pseudonym: str, hash_id: HashId) -> Any:
    # Concrete types first: `isinstance(x, Mapping)` goes through the ABC machinery, which
    # for every leaf of every resource was a visible part of the streaming cost.
    if isinstance(value, _LEAVES):
        return value
    if isinstance(value, dict | Mapping):
        if "reference" in value or ("display" in value and "code" not in value):
            return _reference(value, pseudonym, hash_id)
        cleaned = _strip_dict(value, pseudonym, hash_id)
        return cleaned or None
    if isinstance(value, list):
        items = [c for v in value if (c := _strip_value(v, pseudonym, hash_id)) is not None]
        return items or None
    return value


def _reference(ref: Mapping[str, Any], pseudonym: str, hash_id: HashId) -> dict[str, Any] | None:
    """A FHIR Reference: kept (hashed) only when it points at a clinical resource; references
    to people and bare displays (free text naming someone) are dropped."""
    target = ref.get("reference")
    if not isinstance(target, str) or "/" not in target:
        return None
    kind, _, local = target.rpartition("/")
    kind = kind.rsplit("/", 1)[-1]  # absolute URLs keep only `Type/id`
    if kind == "Patient":
        return {"reference": f"Patient/{pseudonym}"}
    if kind in PERSON_RESOURCES or not kind or not local:
        return None
    return {"reference": f"{kind}/{hash_id(kind, local)}"}
