"""Taking bundles: concurrent `POST /v1/bundles` stored together (group commit).

One transaction decides the patients of every bundle of the batch (one facts query per
institution), then writes patients, records and submissions with one statement each; the
outbox events and audit entries were already written together. A bundle's own failures stay
its own: an institution that is not active, or a `transaction` bundle with a rejected patient,
is answered as before and nothing of it is written. A batch whose bundles share a patient is
taken bundle by bundle (a patient's later bundle must see what the earlier one stored), and so
is a batch that fails (an Idempotency-Key committed concurrently raises for its bundle alone).
Round trips to the database were a third of a 20-resource bundle's CPU on two cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kiban_common.group_commit import GroupCommit
from kiban_intake.domain.fhir import FhirInvalid, Issue, ParsedBundle
from kiban_intake.intake import Admission, InstitutionRefused, Intake, PatientWrites
from kiban_intake.store import queries as q

ROUTE = "/v1/bundles"


@dataclass(frozen=True)
class Bundle:
    institution: str
    parsed: ParsedBundle
    submission_id: str
    idempotency_key: str | None
    request_hash: str


class _SharedPatient(Exception):
    """Two bundles of a batch name the same patient: take them one by one."""


def taker_of(intake: Intake) -> BundleTaker:
    """The running service's taker, made on the first bundle."""
    if intake.bundles is None:
        intake.bundles = BundleTaker(intake)
    taker: BundleTaker = intake.bundles
    return taker


class BundleTaker:
    def __init__(self, intake: Intake, *, max_batch: int = 50) -> None:
        self._intake = intake
        self._group: GroupCommit[Bundle, dict[str, Any] | Exception] = GroupCommit(
            self._take, alone=self._take_alone, max_batch=max_batch
        )

    async def take(self, bundle: Bundle) -> dict[str, Any]:
        """The bundle's outcome once committed; raises `InstitutionRefused` or `FhirInvalid`
        (nothing stored), or the database's error."""
        result = await self._group.submit(bundle)
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def batches(self) -> int:
        return self._group.batches

    async def _take_alone(self, bundle: Bundle) -> dict[str, Any] | Exception:
        return (await self._take([bundle]))[0]

    async def _take(self, bundles: Sequence[Bundle]) -> list[dict[str, Any] | Exception]:
        intake = self._intake
        candidates = [intake.candidates(b.institution, b.parsed.groups) for b in bundles]
        keys = [k for c in candidates for k in set(c.keys)]
        if len(keys) != len(set(keys)):
            raise _SharedPatient
        async with intake.runtime.transaction() as tx:
            conn = await tx.session.connection()
            facts: dict[str, q.AdmissionFacts | InstitutionRefused] = {}
            for institution in dict.fromkeys(b.institution for b in bundles):
                mine = [
                    c
                    for b, c in zip(bundles, candidates, strict=True)
                    if b.institution == institution
                ]
                try:
                    facts[institution] = await intake.facts(conn, institution, mine, True)
                except InstitutionRefused as refused:
                    facts[institution] = refused
            patients = PatientWrites()
            records: list[dict[str, Any]] = []
            submissions: list[dict[str, Any]] = []
            results: list[dict[str, Any] | Exception] = []
            for bundle, candidate in zip(bundles, candidates, strict=True):
                known = facts[bundle.institution]
                if isinstance(known, InstitutionRefused):
                    results.append(known)
                    continue
                writes = PatientWrites()
                admissions = intake.admit(bundle.institution, candidate, known, writes)
                invalid = _transaction_refused(bundle.parsed, admissions)
                if invalid is not None:
                    results.append(invalid)
                    continue
                patients.extend(writes)
                kept = await intake.record_rows(
                    tx,
                    records,
                    bundle.submission_id,
                    bundle.institution,
                    [(a, a.group.resources) for a in admissions],
                )
                outcome = summary(bundle.submission_id, admissions, bundle.parsed.ignored)
                submissions.append(
                    intake.submission_row(
                        submission_id=bundle.submission_id,
                        institution_code=bundle.institution,
                        kind="bundle",
                        bundle_type=bundle.parsed.type,
                        outcome=outcome,
                        resource_count=kept,
                        idempotency_key=bundle.idempotency_key,
                        request_hash=bundle.request_hash,
                    )
                )
                tx.audit(
                    "submission.received",
                    refs=[bundle.submission_id],
                    count=kept,
                    principal=f"institution:{bundle.institution}",
                    route=ROUTE,
                )
                results.append(outcome)
            await patients.store(conn)
            await q.insert_records(conn, records)
            await q.insert_submissions(conn, submissions)
        return results


def _transaction_refused(parsed: ParsedBundle, admissions: list[Admission]) -> FhirInvalid | None:
    """A `transaction` bundle is all or nothing: a rejected patient fails it whole."""
    if parsed.type != "transaction":
        return None
    failed = [a for a in admissions if a.decision.status == "rejected"]
    if not failed:
        return None
    return FhirInvalid(
        [
            Issue(
                f"Bundle.entry[{a.group.entry}].resource",
                "business-rule",
                f"patient rejected ({a.decision.reason}); the transaction is not applied",
            )
            for a in failed
        ]
    )


def summary(submission_id: str, admissions: list[Admission], ignored: int) -> dict[str, Any]:
    patients = [a.outcome() for a in admissions]
    counts = {s: sum(p["status"] == s for p in patients) for s in ("accepted", "held", "rejected")}
    return {
        "submission_id": submission_id,
        "patients": patients,
        "counts": counts,
        "ignored_resources": ignored,
    }
