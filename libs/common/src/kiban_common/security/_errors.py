"""Errors that become HTTP answers. Messages are written for the caller and for logs: they
never carry a token, a claim value, a request body or a submitted field value."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import HTTPException

if TYPE_CHECKING:
    from collections.abc import Mapping


class AuthenticationError(Exception):
    """A bearer token that is not accepted. `code` is stable and machine-readable
    (`invalid_token`, `token_expired`, `wrong_issuer`, `wrong_audience`, `unknown_key`,
    `unsupported_algorithm`, `keys_unavailable`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ApiError(HTTPException):
    """An error answer rendered as `{"code": ..., "message": ...}` by the handlers of
    `install_error_handlers`. Without them FastAPI still answers with the right status and
    headers (as `{"detail": message}`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            status_code=status, detail=message, headers=dict(headers) if headers else None
        )
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return self.status_code

    def __repr__(self) -> str:
        return f"ApiError(status={self.status_code}, code={self.code!r})"
