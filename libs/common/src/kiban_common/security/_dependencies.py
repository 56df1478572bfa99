"""FastAPI dependencies: the bearer principal, scope checks and the zone's principal kinds.

Configuration lives on the app, set once where the app is built: `app.state.token_verifier`
(a `TokenVerifier`), `app.state.zone` (the service's zone) and optionally
`app.state.zone_principal_kinds` (the principal kinds the service serves). A missing
configuration is a programming error and fails closed (500).
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at runtime.

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kiban_common.security._errors import ApiError, AuthenticationError
from kiban_common.security._principal import Principal
from kiban_common.security._verifier import TokenVerifier
from kiban_common.security._zone import principal_allowed_in_zone

# Documents the scheme in OpenAPI; the checks are ours (auto_error would answer in FastAPI's
# own error shape).
_bearer_scheme = HTTPBearer(auto_error=False)
_CHALLENGE = "Bearer"


async def bearer_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Principal:
    """The verified caller. Also records its subject in the request state
    (`principal_subject`) for the audit log."""
    if credentials is None:
        raise ApiError(
            401,
            "missing_token",
            "a bearer token is required",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("app.state.token_verifier is not configured")
    try:
        principal = await verifier.verify(credentials.credentials)
    except AuthenticationError as exc:
        if exc.code == "keys_unavailable":
            raise ApiError(503, exc.code, exc.message, headers={"Retry-After": "10"}) from None
        raise ApiError(
            401,
            exc.code,
            exc.message,
            headers={"WWW-Authenticate": f'{_CHALLENGE} error="invalid_token"'},
        ) from None
    request.state.principal_subject = principal.subject
    # The access monitor (set by the service runtime) may refuse a verified principal: blocked,
    # out of its hours or networks, over its read ceiling, or not served in this zone.
    check = getattr(request.app.state, "access_check", None)
    if check is not None:
        await check(principal, request)
    return principal


def require_scope(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the principal if its token has `scope`, else 403
    `insufficient_scope`: `principal: Annotated[Principal, Depends(require_scope("x"))]`."""

    async def dependency(principal: Annotated[Principal, Depends(bearer_principal)]) -> Principal:
        if not principal.has_scope(scope):
            raise ApiError(
                403,
                "insufficient_scope",
                f"this route needs scope '{scope}'",
                headers={
                    "WWW-Authenticate": f'{_CHALLENGE} error="insufficient_scope", scope="{scope}"'
                },
            )
        return principal

    dependency.__name__ = f"require_scope_{scope}"
    return dependency


async def zone_principal_guard(
    request: Request,
    principal: Annotated[Principal, Depends(bearer_principal)],
) -> Principal:
    """The principal if its kind is served in this service's zone (core: institutions and
    operators unless `app.state.zone_principal_kinds` says otherwise), else 403 `zone_denied`."""
    state = request.app.state
    zone = getattr(state, "zone", None)
    if zone is None:
        raise RuntimeError("app.state.zone is not configured")
    kinds = getattr(state, "zone_principal_kinds", None)
    if not principal_allowed_in_zone(principal, zone, kinds):
        raise ApiError(
            403,
            "zone_denied",
            f"{principal.kind.value} principals are not served in the {zone} zone",
        )
    return principal
