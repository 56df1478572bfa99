"""The intake service's work, shared by its routes, its consumer and its scheduler.

`Intake` is the service context (`runtime.context`): it holds the clock, the settings and the
keys, and does each unit of work on the connection of a transaction its caller opened (the
edge owns transactions). Events go to the outbox through that transaction.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import (
    INTAKE_OPTOUT_APPLIED,
    RECORD_RECEIVED,
    Event,
    OptoutAppliedV1,
    OptoutRequestedV1,
    RecordReceivedV1,
)
from kiban_common.outbox import Transaction
from kiban_intake.domain.fhir import PatientGroup
from kiban_intake.domain.normalize import match_keys, normalize_date
from kiban_intake.domain.rules import Decision, Notice, decide, renewal_due, turns_adult_on
from kiban_intake.settings import IntakeSettings
from kiban_intake.store import queries as q

if TYPE_CHECKING:
    from kiban_intake.bundles import BundleTaker

SOURCE = "/kiban/intake"
PATIENT_KEY_CONTEXT = "kiban.patient-key"
IDENTITY_KEY_CONTEXT = "kiban.intake.identity"
EVENT_IDENTITY = "kiban.intake.record-received.v1/identity"
EVENT_RESOURCES = "kiban.intake.record-received.v1/resources"
SUBJECT_CONTEXT = "kiban.optout.optout-requested.v1/subject"
ROW_IDENTITY = "intake.record.identity"
ROW_RESOURCES = "intake.record.resources"
PATIENT_IDENTITY = "intake.patient.identity"
OUTCOME = "intake.submission.outcome"
OPTOUT_ROUTE = "kiban.optout.optout-requested.v1"

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Admission:
    """A patient's decision within one submission."""

    group: PatientGroup
    key: str
    decision: Decision

    def outcome(self) -> dict[str, Any]:
        d = self.decision
        return {
            "patient_id": self.group.patient_id,
            "status": d.status,
            "reason": d.reason,
            "eligible_on": d.eligible_on.isoformat()
            if d.eligible_on and d.status == "held"
            else None,
        }


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A record's encrypted identity and resources, as stored and (if accepted) as announced."""

    row_identity: str
    row_resources: str
    event_identity: str | None
    event_resources: str | None


@dataclass(slots=True)
class Candidates:
    """The patients of one submission with their keys (computed once: they are HMACs)."""

    groups: list[PatientGroup]
    keys: list[str]
    digests: list[list[str]]


@dataclass(slots=True)
class PatientWrites:
    """Patients and identity keys to store, queued by `Intake.admit` (one or many
    submissions), written with one statement each."""

    patients: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def extend(self, other: PatientWrites) -> None:
        self.patients += other.patients
        self.keys += other.keys
        self.stale += other.stale

    async def store(self, conn: AsyncConnection) -> None:
        await q.upsert_patients(conn, self.patients, self.keys, self.stale)


class InstitutionRefused(Exception):
    """The submitting institution is not registered (`status` None) or not active."""

    def __init__(self, status: str | None) -> None:
        super().__init__("institution refused")
        self.status = status


def _dumps(value: dict[str, Any], *, sort_keys: bool = False) -> bytes:
    """Compact UTF-8 JSON (orjson: about 15x faster than `json` on resources); `json` writes what
    orjson cannot (an integer beyond 64 bits, from a body only `json` could parse)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, sort_keys=sort_keys, separators=(",", ":"))
        return text.encode()


def _date(value: object) -> date | None:
    text = normalize_date(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


class Intake:
    def __init__(self, runtime: Any, clock: Clock = system_clock) -> None:
        self.runtime = runtime
        self.settings: IntakeSettings = runtime.settings
        self.clock = clock
        self.zone = ZoneInfo(self.settings.timezone)
        self.scheduler_wake = asyncio.Event()
        # The group commit of POST /v1/bundles (kiban_intake.bundles), made on first use.
        self.bundles: BundleTaker | None = None

    # -- keys and time -------------------------------------------------------------------------

    @property
    def cipher(self) -> Any:
        return self.runtime.crypto.cipher

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        return self.clock().astimezone(self.zone).date()

    def patient_key(self, institution_code: str, patient_id: str) -> str:
        return str(
            self.runtime.crypto.index.digest(
                f"{institution_code}/{patient_id}", context=PATIENT_KEY_CONTEXT
            )
        )

    def identity_digests(self, identity: dict[str, Any]) -> list[str]:
        index = self.runtime.crypto.index
        return [index.digest(k, context=IDENTITY_KEY_CONTEXT) for k in match_keys(identity)]

    def _decide(
        self, notices: Iterable[Notice], identity: dict[str, Any], opted_out: bool, today: date
    ) -> Decision:
        return decide(
            notices=notices,
            birth_date=_date(identity.get("birth_date")),
            deceased_on=_date(identity.get("deceased_on")),
            today=today,
            period_days=self.settings.notice_period_days,
            opted_out=opted_out,
        )

    def _watch(self, identity: dict[str, Any], decision: Decision, today: date) -> bool:
        """Keep an eye on this patient for a renewed notice at 16 (GET /notices/due)."""
        if decision.reason == "renewed_notice_required":
            return True
        birth = _date(identity.get("birth_date"))
        return birth is not None and turns_adult_on(birth) > today

    # -- submissions ---------------------------------------------------------------------------

    async def decide_patients(
        self,
        conn: AsyncConnection,
        institution_code: str,
        groups: Sequence[PatientGroup],
        *,
        require_active: bool = False,
    ) -> list[Admission]:
        """Decide each patient and store the ones that are accepted or held. With
        `require_active`, the institution's registration is checked in the same round trip
        (raises `InstitutionRefused`)."""
        candidates = self.candidates(institution_code, groups)
        facts = await self.facts(conn, institution_code, [candidates], require_active)
        writes = PatientWrites()
        admissions = self.admit(institution_code, candidates, facts, writes)
        await writes.store(conn)
        return admissions

    def candidates(self, institution_code: str, groups: Sequence[PatientGroup]) -> Candidates:
        return Candidates(
            groups=list(groups),
            keys=[self.patient_key(institution_code, g.patient_id) for g in groups],
            digests=[self.identity_digests(g.identity) for g in groups],
        )

    async def facts(
        self,
        conn: AsyncConnection,
        institution_code: str,
        candidates: Sequence[Candidates],
        require_active: bool,
    ) -> q.AdmissionFacts:
        """What the decisions of these patients (of one institution) depend on, in one round
        trip; with `require_active`, raises `InstitutionRefused` unless it is active."""
        facts = await q.admission_facts(
            conn,
            institution_code,
            [k for c in candidates for k in c.keys],
            [d for c in candidates for ds in c.digests for d in ds],
            institution=require_active,
        )
        if require_active and facts.institution_status != "active":
            raise InstitutionRefused(facts.institution_status)
        return facts

    def admit(
        self,
        institution_code: str,
        candidates: Candidates,
        facts: q.AdmissionFacts,
        writes: PatientWrites,
    ) -> list[Admission]:
        """Decide each patient; queue in `writes` what is stored of the accepted and held."""
        today, now = self.today(), self.now()
        blocked = facts.blocked
        admissions: list[Admission] = []
        for group, key, ds in zip(
            candidates.groups, candidates.keys, candidates.digests, strict=True
        ):
            out = key in facts.opted_out or key in blocked or any(d in blocked for d in ds)
            decision = self._decide(facts.notices.get(key, ()), group.identity, out, today)
            admissions.append(Admission(group, key, decision))
            if decision.status == "rejected":
                continue  # nothing of a rejected patient is kept
            writes.patients.append(
                {
                    "patient_key": key,
                    "institution_code": institution_code,
                    "identity": self.cipher.encrypt_json(group.identity, context=PATIENT_IDENTITY),
                    "renewal_watch": self._watch(group.identity, decision, today),
                    "opted_out": False,
                    "optout_id": None,
                    "first_seen_at": now,
                    "updated_at": now,
                }
            )
            wanted = set(ds)
            stored = facts.identity_keys.get(key)
            if stored == wanted:
                continue  # a patient seen before under the same name and birth date
            if stored:
                writes.stale.append(key)
            writes.keys.extend(
                {"patient_key": key, "digest": d, "institution_code": institution_code}
                for d in dict.fromkeys(ds)
            )
        return admissions

    async def write_records(
        self,
        tx: Transaction,
        conn: AsyncConnection,
        submission_id: str,
        institution_code: str,
        items: Iterable[tuple[Admission, list[dict[str, Any]]]],
    ) -> int:
        """Store the resources of accepted and held patients (encrypted) and emit
        record-received for the accepted ones. Returns the number of resources kept."""
        rows: list[dict[str, Any]] = []
        kept = await self.record_rows(tx, rows, submission_id, institution_code, items)
        await q.insert_records(conn, rows)
        return kept

    async def record_rows(
        self,
        tx: Transaction,
        rows: list[dict[str, Any]],
        submission_id: str,
        institution_code: str,
        items: Iterable[tuple[Admission, list[dict[str, Any]]]],
    ) -> int:
        """Append to `rows` the record rows of accepted and held patients and emit
        record-received for the accepted ones; returns the number of resources kept."""
        now = self.now()
        kept = 0
        for admission, resources in items:
            status = admission.decision.status
            if status == "rejected" or not resources:
                continue
            sealed = self.record_payloads(admission.group.identity, resources, status)
            rows.append(
                {
                    "id": str(uuid.uuid4()),
                    "submission_id": submission_id,
                    "institution_code": institution_code,
                    "patient_key": admission.key,
                    "status": status,
                    "reason": admission.decision.reason,
                    "eligible_on": admission.decision.eligible_on,
                    "resource_count": len(resources),
                    "identity": sealed.row_identity,
                    "resources": sealed.row_resources,
                    "created_at": now,
                    "released_at": now if status == "accepted" else None,
                }
            )
            kept += len(resources)
            if sealed.event_identity is not None and sealed.event_resources is not None:
                await self._emit_sealed(
                    tx,
                    submission_id,
                    institution_code,
                    admission.key,
                    sealed.event_identity,
                    sealed.event_resources,
                    len(resources),
                    now,
                )
        return kept

    def record_payloads(
        self, identity: dict[str, Any], resources: list[dict[str, Any]], status: str
    ) -> SealedRecord:
        """The encrypted columns of a record row and, for an accepted one, the encrypted
        fields of its `record-received` event."""
        identity_json = _dumps(identity, sort_keys=True)
        payload = _dumps({"resources": resources})
        cipher = self.cipher
        accepted = status == "accepted"
        return SealedRecord(
            cipher.encrypt(identity_json, context=ROW_IDENTITY),
            cipher.encrypt(payload, context=ROW_RESOURCES),
            cipher.encrypt(identity_json, context=EVENT_IDENTITY) if accepted else None,
            cipher.encrypt(payload, context=EVENT_RESOURCES) if accepted else None,
        )

    async def _emit_record(
        self,
        tx: Transaction,
        submission_id: str,
        institution_code: str,
        key: str,
        identity_json: str | bytes,
        resources_json: str | bytes,
        count: int,
        received_at: datetime,
    ) -> None:
        await self._emit_sealed(
            tx,
            submission_id,
            institution_code,
            key,
            self.cipher.encrypt(identity_json, context=EVENT_IDENTITY),
            self.cipher.encrypt(resources_json, context=EVENT_RESOURCES),
            count,
            received_at,
        )

    async def _emit_sealed(
        self,
        tx: Transaction,
        submission_id: str,
        institution_code: str,
        key: str,
        identity: str,
        resources: str,
        count: int,
        received_at: datetime,
    ) -> None:
        data = RecordReceivedV1(
            submission_id=submission_id,
            institution_code=institution_code,
            received_at=received_at,
            resource_count=count,
            identity=identity,
            resources=resources,
        )
        await tx.emit(Event(type=RECORD_RECEIVED, source=SOURCE, key=key, data=data))

    def submission_row(
        self,
        *,
        submission_id: str,
        institution_code: str,
        kind: str,
        bundle_type: str | None,
        outcome: dict[str, Any],
        resource_count: int,
        idempotency_key: str | None,
        request_hash: str | None,
    ) -> dict[str, Any]:
        counts = outcome["counts"]
        return {
            "id": submission_id,
            "institution_code": institution_code,
            "kind": kind,
            "bundle_type": bundle_type,
            "received_at": self.now(),
            "accepted": counts["accepted"],
            "held": counts["held"],
            "rejected": counts["rejected"],
            "resource_count": resource_count,
            "outcome": self.cipher.encrypt_json(outcome, context=OUTCOME),
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
        }

    def read_outcome(self, row: dict[str, Any]) -> dict[str, Any]:
        outcome: dict[str, Any] = self.cipher.decrypt_json(row["outcome"], context=OUTCOME)
        return outcome

    # -- notices -------------------------------------------------------------------------------

    async def record_notices(
        self, conn: AsyncConnection, institution_code: str, items: Sequence[dict[str, Any]]
    ) -> int:
        """Record notices, then re-decide the held records of those patients (a renewed
        notice at 16 starts its own waiting period)."""
        now = self.now()
        rows = [
            {
                "institution_code": institution_code,
                "patient_key": self.patient_key(institution_code, item["patient_id"]),
                "notified_on": item["notified_on"],
                "method": item["method"],
                "guardian_notified": item["guardian_notified"],
                "recorded_at": now,
            }
            for item in items
        ]
        # One row per patient and day: the last item for a day wins within one request too.
        unique = list({(r["patient_key"], r["notified_on"]): r for r in rows}.values())
        await q.upsert_notices(conn, unique)
        keys = list(dict.fromkeys(r["patient_key"] for r in unique))
        if await self.redecide_held(conn, keys):
            self.scheduler_wake.set()
        return len(rows)

    async def redecide_held(self, conn: AsyncConnection, keys: Sequence[str]) -> int:
        """Re-decide held records of these patients; returns how many became due."""
        held = await q.held_records(conn, keys=keys)
        if not held:
            return 0
        today = self.today()
        patient_keys = list({r["patient_key"] for r in held})
        patients = await q.get_patients(conn, patient_keys)
        notices = await q.notices_for(conn, patient_keys)
        due = 0
        decisions: dict[str, Decision] = {}
        for key in patient_keys:
            patient = patients.get(key)
            if patient is None or patient["identity"] is None:
                continue
            identity = self.cipher.decrypt_json(patient["identity"], context=PATIENT_IDENTITY)
            decisions[key] = self._decide(
                notices.get(key, ()), identity, bool(patient["opted_out"]), today
            )
        for record in held:
            decision = decisions.get(record["patient_key"])
            if decision is None or decision.status == "rejected":
                continue
            await q.update_record(
                conn, record["id"], reason=decision.reason, eligible_on=decision.eligible_on
            )
            due += decision.status == "accepted"
        return due

    async def notices_due(
        self, conn: AsyncConnection, institution_code: str
    ) -> list[dict[str, Any]]:
        """Patients notified only as minors who are 16 or older now."""
        today = self.today()
        watched = await q.watched_patients(conn, institution_code)
        keys = [p["patient_key"] for p in watched]
        notices = await q.notices_for(conn, keys)
        held = await q.held_counts(conn, keys)
        due: list[dict[str, Any]] = []
        settled: list[str] = []
        for patient in watched:
            if patient["identity"] is None:
                continue
            identity = self.cipher.decrypt_json(patient["identity"], context=PATIENT_IDENTITY)
            birth = _date(identity.get("birth_date"))
            key = patient["patient_key"]
            ns = notices.get(key, [])
            if renewal_due(ns, birth, _date(identity.get("deceased_on")), today):
                assert birth is not None
                due.append(
                    {
                        "patient_id": identity["institution_patient_id"],
                        "turned_16_on": turns_adult_on(birth).isoformat(),
                        "last_notified_on": max(n.notified_on for n in ns).isoformat(),
                        "held_records": held.get(key, 0),
                    }
                )
            elif birth is None or turns_adult_on(birth) <= today:
                settled.append(key)  # adult with an adult notice: nothing left to watch
        await q.set_watch(conn, settled, False)
        due.sort(key=lambda d: (d["turned_16_on"], d["patient_id"]))
        return due

    # -- scheduler -----------------------------------------------------------------------------

    async def release_due(self) -> int:
        """Release held records whose waiting period has ended (re-deciding each patient
        first); returns how many records were released. Safe to run from several workers
        (rows are locked and skipped) and after a restart (all state is in the database)."""
        released = 0
        while True:
            async with self.runtime.transaction() as tx:
                conn = await tx.session.connection()
                batch = await q.held_records(conn, due_on=self.today(), limit=200)
                if not batch:
                    return released
                released_now = await self._release(tx, conn, batch)
                released += released_now
                tx.audit(
                    "records.released",
                    refs=[r["id"] for r in batch],
                    count=released_now,
                    principal="intake:scheduler",
                    route="scheduler",
                )
            if len(batch) < 200:
                return released

    async def _release(
        self, tx: Transaction, conn: AsyncConnection, batch: list[dict[str, Any]]
    ) -> int:
        today, now = self.today(), self.now()
        keys = list({r["patient_key"] for r in batch})
        patients = await q.get_patients(conn, keys)
        notices = await q.notices_for(conn, keys)
        released = 0
        for record in batch:
            patient = patients.get(record["patient_key"])
            identity_json = self.cipher.decrypt_str(record["identity"], context=ROW_IDENTITY)
            identity = json.loads(identity_json)
            opted = patient is None or bool(patient["opted_out"])
            decision = self._decide(notices.get(record["patient_key"], ()), identity, opted, today)
            if decision.status == "accepted":
                payload = self.cipher.decrypt_str(record["resources"], context=ROW_RESOURCES)
                await self._emit_record(
                    tx,
                    record["submission_id"],
                    record["institution_code"],
                    record["patient_key"],
                    identity_json,
                    payload,
                    record["resource_count"],
                    now,
                )
                await q.update_record(
                    conn, record["id"], status="accepted", reason=None, released_at=now
                )
                released += 1
            elif decision.status == "held":
                await q.update_record(
                    conn, record["id"], reason=decision.reason, eligible_on=decision.eligible_on
                )
                if decision.reason == "renewed_notice_required":
                    await q.set_watch(conn, [record["patient_key"]], True)
            else:
                await q.update_record(
                    conn,
                    record["id"],
                    status="dropped",
                    reason=decision.reason,
                    identity=None,
                    resources=None,
                )
        return released

    # -- opt-outs ------------------------------------------------------------------------------

    async def apply_optout(self, event: Event[OptoutRequestedV1], tx: Transaction) -> None:
        data = event.data
        subject: dict[str, Any] = json.loads(
            self.runtime.crypto.unseal(data.subject, context=SUBJECT_CONTEXT)
        )
        conn = await tx.session.connection()
        now = self.now()
        scoped = data.institution_code if data.scope == "institution" else None
        local_id = subject.get("institution_patient_id")
        if scoped and isinstance(local_id, str) and local_id:
            key = self.patient_key(scoped, local_id)
            block = [key]
            matched = await q.existing_keys(conn, [key])
        else:
            block = self.identity_digests(subject)
            matched = await q.patients_by_digest(conn, block, scoped)
        matched_keys = sorted(matched)
        # The matched patients' own keys are blocked too, so a later submission under the same
        # institution id is refused even if the name was written differently.
        rows = [
            {
                "optout_id": data.optout_id,
                "institution_code": scoped,
                "digest": d,
                "created_at": now,
            }
            for d in dict.fromkeys([*block, *matched_keys])
        ]
        await q.add_blocks(conn, rows)
        dropped = await q.drop_held(conn, matched_keys)
        deleted = 0
        if data.action == "stop_and_delete":
            deleted = await q.delete_raw(conn, matched_keys)
        await q.mark_opted_out(
            conn,
            matched_keys,
            data.optout_id,
            now,
            delete_identity=data.action == "stop_and_delete",
        )
        applied = OptoutAppliedV1(
            optout_id=data.optout_id,
            service="intake",
            applied_at=now,
            matched=len(matched_keys),
            purged={"held_records_dropped": dropped, "raw_records_deleted": deleted},
        )
        tx.audit(
            f"optout.{data.action}",
            refs=[data.optout_id],
            count=len(matched_keys),
            purpose=data.optout_id,
            principal="intake:consumer",
            route=OPTOUT_ROUTE,
        )
        await tx.emit(
            Event(type=INTAKE_OPTOUT_APPLIED, source=SOURCE, key=data.optout_id, data=applied)
        )


async def scheduler(runtime: Any) -> None:
    """Background loop: release held records when their waiting period ends."""
    intake: Intake = runtime.context
    interval = intake.settings.scheduler_interval_seconds
    while not runtime.stopping.is_set():
        intake.scheduler_wake.clear()
        await intake.release_due()
        waits = [
            asyncio.ensure_future(runtime.stopping.wait()),
            asyncio.ensure_future(intake.scheduler_wake.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
