"""The `record-linked` event (convention 4): what leaves the linkage unit for a record — its
person's pseudonym, the demographics the anonymizer generalizes, and resources already
stripped of identity (`stripping`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from kiban_common.events import RECORD_LINKED, Demographics, Event, RecordLinkedV1
from kiban_linkage.domain.demographics import demographics

SOURCE = "/kiban/linkage"


def record_linked(
    *,
    pseudonym: str,
    institution_code: str,
    submission_id: str,
    at: datetime,
    identity: Mapping[str, Any],
    resources: Sequence[dict[str, Any]],
    merged_from: Sequence[str] = (),
) -> Event[RecordLinkedV1]:
    """Keyed by the pseudonym, so a person's events stay in order; `merged_from` names the
    pseudonyms a merge absorbed (downstream moves their data to this one)."""
    return Event(
        type=RECORD_LINKED,
        source=SOURCE,
        key=pseudonym,
        data=RecordLinkedV1(
            person=pseudonym,
            institution_code=institution_code,
            submission_id=submission_id,
            linked_at=at,
            demographics=Demographics(**demographics(identity)),
            resources=list(resources),
            merged_from=list(merged_from),
        ),
    )
