"""FHIR submissions: `POST /v1/bundles`, `POST /v1/bulk` and `GET /v1/submissions/{id}`.

Invalid FHIR is answered with a FHIR `OperationOutcome` whose issues name the element
(`expression`) and never echo a submitted value; nothing of an invalid request is stored.
A `transaction` bundle is all-or-nothing (a patient that would be rejected fails the whole
bundle with 422); `batch` and `collection` bundles get an outcome per patient.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

import hashlib
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from starlette.requests import ClientDisconnect

from kiban_common.security import ApiError, Principal, PrincipalKind, bearer_principal
from kiban_intake.api.deps import (
    ClaimedInstitution,
    Institution,
    Runtime,
    fhir_error,
    intake_of,
    refuse_unless_active,
)
from kiban_intake.bulk import BodyTooLarge, BulkIngest, lines
from kiban_intake.bundles import Bundle, taker_of
from kiban_intake.domain.fhir import FhirInvalid, Issue, parse_bundle, parse_json
from kiban_intake.intake import InstitutionRefused, Intake
from kiban_intake.store import queries as q

router = APIRouter(tags=["submissions"])

_OUTCOME_DOC = {
    "description": "FHIR OperationOutcome naming the element",
    "content": {"application/fhir+json": {}},
}
IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=256)
]


def _too_large(limit: int) -> JSONResponse:
    return fhir_error(413, [Issue("Bundle", "too-long", f"the body is larger than {limit} bytes")])


def _declared_too_large(request: Request, limit: int) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


async def _replay(
    intake: Intake, institution: str, key: str, request_hash: str, *, check: bool = False
) -> Response | None:
    async with intake.runtime.engine.connect() as conn:
        if check:  # a suspended institution gets no replay either
            found = await q.get_institution(conn, institution)
            if found is None or found["status"] != "active":
                return None  # the submission path answers 403
        row = await q.submission_by_key(conn, institution, key)
    if row is None:
        return None
    if row["request_hash"] != request_hash:
        return fhir_error(
            409,
            [Issue("Bundle", "conflict", "this Idempotency-Key was used with a different body")],
        )
    return JSONResponse(
        intake.read_outcome(row), status_code=202, headers={"Idempotent-Replayed": "true"}
    )


async def _check_institution(intake: Intake, institution: str) -> None:
    async with intake.runtime.engine.connect() as conn:
        found = await q.get_institution(conn, institution)
    refuse_unless_active(None if found is None else found["status"])


@router.post(
    "/v1/bundles",
    status_code=202,
    responses={409: _OUTCOME_DOC, 413: _OUTCOME_DOC, 422: _OUTCOME_DOC},
)
async def post_bundle(
    request: Request,
    runtime: Runtime,
    institution: ClaimedInstitution,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """A FHIR R4 Bundle (`transaction`, `batch` or `collection`) of JP Core Patients and the
    clinical resources that reference them. The institution's registration (RULES.md 5) is
    checked in the submission's own transaction, with the patients' notices and blocks."""
    intake = intake_of(runtime)
    limit = intake.settings.bundle_max_bytes
    if _declared_too_large(request, limit):
        await _check_institution(intake, institution)
        return _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            await _check_institution(intake, institution)
            return _too_large(limit)
    request_hash = hashlib.sha256(body).hexdigest()
    if idempotency_key is not None:
        replay = await _replay(intake, institution, idempotency_key, request_hash, check=True)
        if replay is not None:
            return replay
    try:
        parsed = parse_bundle(parse_json(bytes(body)), institution)
    except FhirInvalid as exc:
        await _check_institution(intake, institution)  # unregistered or suspended: 403, not 422
        return fhir_error(422, exc.issues)
    del body
    bundle = Bundle(institution, parsed, str(uuid.uuid4()), idempotency_key, request_hash)
    try:
        outcome = await taker_of(intake).take(bundle)
    except FhirInvalid as exc:  # a transaction bundle with a rejected patient
        return fhir_error(422, exc.issues)
    except InstitutionRefused as exc:
        refuse_unless_active(exc.status)  # raises the 403
        raise
    except IntegrityError:
        # The same Idempotency-Key committed by a concurrent request: answer as a retry.
        if idempotency_key is not None:
            replay = await _replay(intake, institution, idempotency_key, request_hash)
            if replay is not None:
                return replay
        raise
    return JSONResponse(outcome, status_code=202)


@router.post("/v1/bulk", status_code=202, responses={400: _OUTCOME_DOC, 413: _OUTCOME_DOC})
async def post_bulk(request: Request, runtime: Runtime, institution: Institution) -> Response:
    """FHIR Bulk Data NDJSON (one resource per line), streamed. Patient lines come before
    the lines that reference them. Bad lines are reported with their numbers (`errors`)."""
    intake = intake_of(runtime)
    settings = intake.settings
    if _declared_too_large(request, settings.bulk_max_bytes):
        return _too_large(settings.bulk_max_bytes)
    submission_id = str(uuid.uuid4())
    try:
        async with runtime.transaction() as tx:
            conn = await tx.session.connection()
            ingest = BulkIngest(intake, tx, conn, submission_id, institution)
            stream = lines(request.stream(), settings.bulk_max_bytes, settings.bulk_max_line_bytes)
            async for number, raw in stream:
                await ingest.line(number, raw)
            await ingest.flush()
            outcome = ingest.outcome()
            row = intake.submission_row(
                submission_id=submission_id,
                institution_code=institution,
                kind="bulk",
                bundle_type=None,
                outcome=outcome,
                resource_count=ingest.kept,
                idempotency_key=None,
                request_hash=None,
            )
            await q.insert_submissions(conn, [row])
            tx.audit(
                "submission.received",
                refs=[submission_id],
                count=ingest.kept,
                principal=f"institution:{institution}",
                route="/v1/bulk",
            )
    except BodyTooLarge:
        return _too_large(settings.bulk_max_bytes)
    except ClientDisconnect:
        return fhir_error(400, [Issue("Bundle", "incomplete", "the upload was interrupted")])
    return JSONResponse(outcome, status_code=202)


@router.get("/v1/submissions/{submission_id}")
async def get_submission(
    submission_id: str,
    runtime: Runtime,
    principal: Annotated[Principal, Depends(bearer_principal)],
) -> dict[str, Any]:
    """The outcome again: for the institution that submitted it (intake:submit) or an
    operator (admin)."""
    is_admin = principal.has_scope("admin")
    if not (is_admin or principal.has_scope("intake:submit")):
        raise ApiError(403, "insufficient_scope", "this route needs scope 'intake:submit'")
    intake = intake_of(runtime)
    async with runtime.engine.connect() as conn:
        row = await q.get_submission(conn, submission_id)
    owner = (
        principal.kind is PrincipalKind.INSTITUTION
        and row is not None
        and (row["institution_code"] == principal.id)
    )
    if row is None or not (is_admin or owner):
        raise ApiError(404, "not_found", "no such submission")
    outcome = intake.read_outcome(row)
    outcome.update(
        kind=row["kind"],
        bundle_type=row["bundle_type"],
        institution_code=row["institution_code"],
        received_at=row["received_at"].isoformat(),
    )
    return outcome
