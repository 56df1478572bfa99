"""What an application may ask for. The API validates requests against these; the release and
anonymizer services rely on a decided dataset spec naming only these resources and patterns."""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

# The FHIR resources Kiban collects (CONTRACT.md, intake) and can therefore provide.
ResourceType = Literal[
    "Patient",
    "Encounter",
    "Condition",
    "Observation",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
]
DataItem = Literal["ehr", "dpc", "claims"]
UserCategory = Literal["academia", "industry", "government"]
DatasetKind = Literal["anonymized", "pseudonymized"]

# A condition code pattern: a code (ICD-10 such as `I50.9`, or another system's alphanumeric
# code) optionally ending in one `*` that matches any continuation (`I50*`). Nothing else: no
# leading or inner wildcard, no spaces, no bare `*` (that would select every condition).
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]{0,31}\*?$"
_CODE_PATTERN = re.compile(CODE_PATTERN)


def is_code_pattern(value: str) -> bool:
    return _CODE_PATTERN.fullmatch(value) is not None


def organization_key(name: str) -> str:
    """The form organizations are compared in (certification, conflicts of interest):
    Unicode NFKC (full-width letters, half-width kana), case-folded, inner spaces collapsed."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())
