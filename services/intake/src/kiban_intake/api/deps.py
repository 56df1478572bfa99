"""What the routes share: the service context, the submitting institution, FHIR answers."""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Depends
from fastapi.responses import JSONResponse

from kiban_common.security import ApiError, Principal, PrincipalKind, require_scope
from kiban_common.service import ServiceRuntime, current_runtime
from kiban_intake.domain.fhir import Issue, operation_outcome
from kiban_intake.intake import Intake
from kiban_intake.store import queries as q

FHIR_JSON = "application/fhir+json"

Runtime = Annotated[ServiceRuntime, Depends(current_runtime)]


def intake_of(runtime: ServiceRuntime) -> Intake:
    intake: Intake = runtime.context
    return intake


async def submitting_institution(
    runtime: Runtime,
    principal: Annotated[Principal, Depends(require_scope("intake:submit"))],
) -> str:
    """The code of the caller's institution: the token subject must be `institution:<code>`
    of a registered institution that is not suspended (RULES.md 5)."""
    if principal.kind is not PrincipalKind.INSTITUTION:
        raise ApiError(403, "not_an_institution", "only institutions submit records")
    async with runtime.engine.connect() as conn:
        institution = await q.get_institution(conn, principal.id)
    if institution is None:
        raise ApiError(403, "unknown_institution", "the institution is not registered")
    if institution["status"] != "active":
        raise ApiError(403, "institution_suspended", "the institution is suspended")
    return principal.id


Institution = Annotated[str, Depends(submitting_institution)]


def fhir_error(status: int, issues: Iterable[Issue]) -> JSONResponse:
    return JSONResponse(operation_outcome(issues), status_code=status, media_type=FHIR_JSON)


def fhir_ok(body: dict[str, Any], status: int = 202) -> JSONResponse:
    return JSONResponse(body, status_code=status)
