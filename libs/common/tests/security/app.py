"""A small service used by the HTTP tests, wired the way a Kiban service is."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from pydantic import BaseModel, field_validator

from kiban_common.security import (
    ApiError,
    Principal,
    TokenVerifier,
    bearer_principal,
    install_error_handlers,
    require_scope,
    zone_principal_guard,
)


class Subject(BaseModel):
    name: str
    birth_date: date
    insurer_number: str

    @field_validator("insurer_number")
    @classmethod
    def _digits(cls, value: str) -> str:
        if not value.isdigit():
            raise ValueError(f"insurer number {value} must be digits")  # a careless validator
        return value


class Optout(BaseModel):
    subject: Subject
    action: str


def build(verifier: TokenVerifier, zone: str = "core") -> FastAPI:
    app = FastAPI()
    app.state.token_verifier = verifier
    app.state.zone = zone
    install_error_handlers(app)
    router = APIRouter(prefix="/v1")

    @router.get("/optouts/{optout_id}")
    async def read_optout(
        optout_id: str, principal: Annotated[Principal, Depends(require_scope("optout:read"))]
    ) -> dict[str, Any]:
        return {"id": optout_id, "subject": principal.subject}

    @router.post("/optouts", status_code=201)
    async def create_optout(
        body: Optout, principal: Annotated[Principal, Depends(require_scope("optout:write"))]
    ) -> dict[str, str]:
        return {"action": body.action}

    @router.get("/me")
    async def me(principal: Annotated[Principal, Depends(bearer_principal)]) -> dict[str, str]:
        return {"subject": principal.subject}

    @router.get("/core-only")
    async def core_only(
        principal: Annotated[Principal, Depends(zone_principal_guard)],
    ) -> dict[str, str]:
        return {"kind": principal.kind.value}

    @router.get("/conflict")
    async def conflict() -> None:
        raise ApiError(409, "already_applied", "the opt-out is already in force")

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("山田太郎-CANARY leaked into an exception")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(router)
    return app
