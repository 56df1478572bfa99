"""Every error answer of a Kiban API is `{"code": ..., "message": ...}`.

Messages never echo what the caller sent: validation errors name the location of the field
(`body.subject.birth_date`) and what is wrong with it, without the submitted value, because
that value may be a name or a birth date. Unexpected exceptions become a bare 500; only their
type is logged here.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, get_args

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core.core_schema import ErrorType
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from kiban_common.security._errors import ApiError
from kiban_common.security._routes import route_template

if TYPE_CHECKING:
    from collections.abc import Mapping

    from starlette.applications import Starlette
    from starlette.requests import Request

_log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}
_TEMPLATED_TYPES = frozenset(get_args(ErrorType)) - {"value_error", "assertion_error"}
_MAX_ERRORS_SHOWN = 5
_VALIDATION_STATUS = 422


def install_error_handlers(app: Starlette) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)


def error_body(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _respond(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    if status in (204, 304) or status < 200:
        return Response(status_code=status, headers=dict(headers) if headers else None)
    return JSONResponse(
        error_body(code, message), status_code=status, headers=dict(headers) if headers else None
    )


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _respond(exc.status_code, exc.code, exc.message, exc.headers)


async def _http_exception(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else _phrase(status)
    return _respond(status, _CODES.get(status, "http_error"), message, exc.headers)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _respond(_VALIDATION_STATUS, "invalid_request", validation_message(exc.errors()))


async def _unexpected(request: Request, exc: Exception) -> Response:
    _log.error(
        "unhandled %s in %s %s",
        type(exc).__name__,
        request.method,
        route_template(request.scope) or "(no route matched)",  # a raw path may hold an id
    )
    return _respond(500, "internal_error", "internal error")


def validation_message(errors: Any) -> str:
    """`loc: msg` for each error, joined with `; `. pydantic puts the offending value in
    `input` (dropped here) and sometimes, through custom validators, in `msg`: a message that
    contains the submitted value is replaced by the error type."""
    parts: list[str] = []
    items = list(errors) if isinstance(errors, list | tuple) else []
    for error in items[:_MAX_ERRORS_SHOWN]:
        if not isinstance(error, dict):
            continue
        location = ".".join(str(part) for part in error.get("loc", ())) or "request"
        parts.append(f"{location}: {_safe_msg(error)}")
    if len(items) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(items) - _MAX_ERRORS_SHOWN} more")
    return "; ".join(parts) or "the request is not valid"


def _safe_msg(error: dict[str, Any]) -> str:
    """pydantic's own messages are templates over the constraint, not the value; messages from
    validators (`value_error`, `assertion_error`, custom types) are free text. Both are checked
    for the submitted value, the latter for values of any length (a family name can be one
    character)."""
    msg = str(error.get("msg", "")) or "invalid value"
    kind = str(error.get("type", "value_error"))
    value = error.get("input")
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        shortest = 4 if kind in _TEMPLATED_TYPES else 1
        if len(text) >= shortest and text in msg:
            return f"invalid value ({kind})"
    return msg


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"
