"""`POST /v1/bulk`: FHIR Bulk Data NDJSON, one resource per line, read as a stream.

The body is never held whole: lines are parsed as they arrive, a patient's resources are
buffered only until `bulk_flush_resources` resources are waiting, then written (encrypted) and
announced through the outbox. A Patient line must come before the lines that reference it (as
in a Bulk Data export, where `Patient.ndjson` precedes the others). Every bad line is reported
with its number and skipped; the rest of the stream goes on. The whole request is one database
transaction, so a request that fails as a whole (body too large, client gone) stores nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.outbox import Transaction
from kiban_intake.domain.fhir import (
    CLINICAL,
    PATIENT,
    Issue,
    PatientGroup,
    identity_of,
    is_fhir_type,
    load_json,
    local_patient_id,
    no_local_id,
    normalize_reference,
    patient_reference,
    reference_keys,
    validate_resource,
)
from kiban_intake.intake import Admission, Intake

MAX_ERRORS_REPORTED = 1000


class BodyTooLarge(Exception):
    pass


async def lines(
    chunks: AsyncIterator[bytes], max_bytes: int, max_line: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """(line number, line) for each line; `None` for a line longer than `max_line` (its bytes
    are skipped, not kept). Raises `BodyTooLarge` past `max_bytes`."""
    total = 0
    number = 0
    buffer = bytearray()
    overlong = False
    async for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise BodyTooLarge
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not overlong:
                    buffer += chunk[start:]
                    if len(buffer) > max_line:
                        overlong = True
                        buffer.clear()
                break
            number += 1
            if overlong:
                yield number, None
            else:
                buffer += chunk[start:end]
                yield number, bytes(buffer) if len(buffer) <= max_line else None
            buffer.clear()
            overlong = False
            start = end + 1
    if buffer or overlong:
        number += 1
        yield number, None if overlong else bytes(buffer)


@dataclass(slots=True)
class _Patient:
    group: PatientGroup
    admission: Admission | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)


class BulkIngest:
    def __init__(
        self,
        intake: Intake,
        tx: Transaction,
        conn: AsyncConnection,
        submission_id: str,
        institution_code: str,
    ) -> None:
        self.intake = intake
        self.tx = tx
        self.conn = conn
        self.submission_id = submission_id
        self.code = institution_code
        self.flush_at = intake.settings.bulk_flush_resources
        self.patients: dict[str, _Patient] = {}  # by institution-local id
        self.refs: dict[str, _Patient] = {}
        self.undecided: list[_Patient] = []
        self.waiting: dict[str, _Patient] = {}
        self.pending = 0
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self.lines = 0
        self.resources = 0
        self.kept = 0
        self.ignored = 0
        self.not_kept = 0  # resources of rejected patients

    def _error(self, line: int, issue: Issue) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_REPORTED:
            self.errors.append(
                {
                    "line": line,
                    "element": issue.expression,
                    "code": issue.code,
                    "message": issue.diagnostics,
                }
            )

    async def line(self, number: int, raw: bytes | None) -> None:
        self.lines = number
        if raw is None:
            self._error(number, Issue("line", "too-long", "the line is too long"))
            return
        if not raw.strip():
            return
        try:
            resource = load_json(raw)
        except ValueError:
            self._error(number, Issue("line", "structure", "the line is not valid JSON"))
            return
        if not isinstance(resource, dict):
            self._error(number, Issue("line", "structure", "a line must be one JSON resource"))
            return
        self.resources += 1
        rtype = resource.get("resourceType")
        if rtype == PATIENT:
            self._patient(number, resource)
        elif rtype in CLINICAL:
            self._clinical(number, resource)
        elif is_fhir_type(rtype):
            self.ignored += 1
        else:
            self._error(
                number,
                Issue(
                    f"{rtype or 'line'}.resourceType",
                    "structure",
                    "unknown or missing resourceType",
                ),
            )
        if self.pending >= self.flush_at or len(self.undecided) >= self.flush_at:
            await self.flush()

    def _patient(self, number: int, resource: dict[str, Any]) -> None:
        issues = validate_resource(resource, PATIENT)
        if issues:
            self._error(number, issues[0])
            return
        pid = local_patient_id(resource, self.code)
        if pid is None:
            self._error(number, no_local_id(PATIENT))
            return
        if pid in self.patients:
            self._error(number, Issue("Patient.identifier", "business-rule", "duplicate Patient"))
            return
        patient = _Patient(PatientGroup(pid, identity_of(resource, pid), number))
        self.patients[pid] = patient
        self.undecided.append(patient)
        for key in reference_keys(resource):
            self.refs[key] = patient

    def _clinical(self, number: int, resource: dict[str, Any]) -> None:
        rtype = str(resource["resourceType"])
        issues = validate_resource(resource, rtype)
        if issues:
            self._error(number, issues[0])
            return
        ref = patient_reference(resource)
        patient = self.refs.get(normalize_reference(ref)) if ref else None
        if patient is None:
            self._error(
                number,
                Issue(
                    f"{rtype}.{CLINICAL[rtype]}.reference",
                    "not-found",
                    "must reference a Patient on an earlier line",
                ),
            )
            return
        decision = patient.admission.decision if patient.admission else None
        if decision is not None and decision.status == "rejected":
            self.not_kept += 1
            return
        patient.pending.append(resource)
        self.waiting[patient.group.patient_id] = patient
        self.pending += 1

    async def flush(self) -> None:
        if self.undecided:
            groups = [p.group for p in self.undecided]
            admissions = await self.intake.decide_patients(self.conn, self.code, groups)
            for patient, admission in zip(self.undecided, admissions, strict=True):
                patient.admission = admission
            self.undecided = []
        items = []
        for patient in self.waiting.values():
            assert patient.admission is not None
            if patient.admission.decision.status == "rejected":
                self.not_kept += len(patient.pending)
            else:
                items.append((patient.admission, patient.pending))
        self.kept += await self.intake.write_records(
            self.tx, self.conn, self.submission_id, self.code, items
        )
        for patient in self.waiting.values():
            patient.pending = []
        self.waiting = {}
        self.pending = 0
        await self.tx.flush()  # outbox rows go to the database now, not at commit

    def outcome(self) -> dict[str, Any]:
        patients = [p.admission.outcome() for p in self.patients.values() if p.admission]
        counts = {
            s: sum(p["status"] == s for p in patients) for s in ("accepted", "held", "rejected")
        }
        return {
            "submission_id": self.submission_id,
            "patients": patients,
            "counts": counts,
            "lines": self.lines,
            "resources": {
                "received": self.resources,
                "kept": self.kept,
                "ignored": self.ignored,
                "not_kept": self.not_kept,
            },
            "error_count": self.error_count,
            "errors": self.errors,
        }
