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


def refuse_unless_active(status: str | None) -> None:
    """RULES.md 5: only a registered institution that is not suspended submits."""
    if status is None:
        raise ApiError(403, "unknown_institution", "the institution is not registered")
    if status != "active":
        raise ApiError(403, "institution_suspended", "the institution is suspended")


async def institution_claimed(
    principal: Annotated[Principal, Depends(require_scope("intake:submit"))],
) -> str:
    """The institution code of the token subject (`institution:<code>`), not yet checked
    against the registry: the route must do that (`POST /v1/bundles` does it in its own
    transaction, saving a connection and three round trips per bundle)."""
    if principal.kind is not PrincipalKind.INSTITUTION:
        raise ApiError(403, "not_an_institution", "only institutions submit records")
    return principal.id


async def submitting_institution(
    runtime: Runtime, code: Annotated[str, Depends(institution_claimed)]
) -> str:
    """The code of the caller's institution: the token subject must be `institution:<code>`
    of a registered institution that is not suspended (RULES.md 5)."""
    async with runtime.engine.connect() as conn:
        institution = await q.get_institution(conn, code)
    refuse_unless_active(None if institution is None else institution["status"])
    return code


Institution = Annotated[str, Depends(submitting_institution)]
ClaimedInstitution = Annotated[str, Depends(institution_claimed)]


def fhir_error(status: int, issues: Iterable[Issue]) -> JSONResponse:
    return JSONResponse(operation_outcome(issues), status_code=status, media_type=FHIR_JSON)


def fhir_ok(body: dict[str, Any], status: int = 202) -> JSONResponse:
    return JSONResponse(body, status_code=status)
