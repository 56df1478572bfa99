"""The route a request matched, as its template, for logs and the audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

MAX_RAW_PATH = 200


def route_template(scope: Scope, *, root_path: str = "") -> str | None:
    """`/v1/optouts/{optout_id}` for a matched route (Starlette stores it in `scope["route"]`
    while routing); None before routing or when nothing matched. `root_path` is the app's own
    root path, so only the prefix of a mounted sub-application is kept."""
    route = scope.get("route")
    path_format = getattr(route, "path_format", None)
    if not isinstance(path_format, str):
        return None
    mount_prefix = str(scope.get("root_path", ""))[len(root_path) :]
    return (mount_prefix.rstrip("/") + path_format) or "/"


def route_or_path(scope: Scope, *, root_path: str = "") -> str:
    """The template when a route matched, else the raw path cut to 200 characters (never the
    query string)."""
    template = route_template(scope, root_path=root_path)
    if template is not None:
        return template[:255]
    return str(scope.get("path", ""))[:MAX_RAW_PATH]
