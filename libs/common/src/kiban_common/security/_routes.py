"""The route a request matched, as its template, for logs and the audit trail."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

MAX_RAW_PATH = 200
# A path segment kept as it is when nothing matched: a plain ASCII word with at most two digits
# (`wp-admin`, `.env`, `v1`, `setup.php`). Anything else (numbers, dates, non-ASCII, long
# values) may be a caller's data and becomes `*`.
_PLAIN_SEGMENT = re.compile(r"^(?=(?:[^0-9]*[0-9]){0,2}[^0-9]*$)[A-Za-z_.~-][A-Za-z0-9_.~-]{0,39}$")


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
    """The template when a route matched, else the path with every segment that is not a
    plain word masked (`/v1/nowhere/*/*`): probes for `/wp-admin/setup.php` stay readable,
    a name or a birth date a caller put in a path does not reach the audit log or a span."""
    template = route_template(scope, root_path=root_path)
    if template is not None:
        return template[:255]
    return masked_path(str(scope.get("path", "")))


def masked_path(path: str) -> str:
    segments = path[: MAX_RAW_PATH * 4].split("/")
    return "/".join(s if not s or _PLAIN_SEGMENT.fullmatch(s) else "*" for s in segments)[
        :MAX_RAW_PATH
    ]
