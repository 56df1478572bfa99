"""The zone guard: core services answer only callers from their own networks, and only the
principal kinds they serve.

The core zone holds identifiable data and has no route to open networks; the guard is the last
line if a route is misconfigured. The information zone is internet-facing, so its networks are
not restricted.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse

from kiban_common.events import Zone
from kiban_common.security._principal import Principal, PrincipalKind

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from starlette.types import ASGIApp, Receive, Scope, Send

_log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_EXEMPT_PATHS: tuple[str, ...] = ("/healthz", "/readyz")
DEFAULT_CORE_KINDS: frozenset[PrincipalKind] = frozenset(
    {PrincipalKind.INSTITUTION, PrincipalKind.OPERATOR}
)
_ALL_KNOWN_KINDS = frozenset(PrincipalKind) - {PrincipalKind.UNKNOWN}


def principal_allowed_in_zone(
    principal: Principal,
    zone: Zone | str,
    allowed_kinds: Collection[PrincipalKind | str] | None = None,
) -> bool:
    """Whether a service in `zone` serves this principal. `allowed_kinds` None means the
    zone's default: institutions and operators in the core zone, every known kind in the
    information zone. A subject of unknown kind is served only when explicitly allowed."""
    zone = Zone(zone)
    if allowed_kinds is None:
        allowed: Collection[PrincipalKind | str] = (
            DEFAULT_CORE_KINDS if zone is Zone.CORE else _ALL_KNOWN_KINDS
        )
    else:
        allowed = {PrincipalKind(kind) for kind in allowed_kinds}
    return principal.kind in allowed


class ZoneGuard:
    """Pure ASGI middleware. In the core zone, a request whose peer address (`scope["client"]`,
    as the ASGI server reports it) is outside `allowed_networks` is answered 403 `zone_denied`
    before anything else runs; with no networks configured every caller is refused. Paths in
    `exempt_paths` (exact match) pass, for orchestrator probes. `X-Forwarded-For` is not
    consulted: a proxy in front of a core service must be trusted through the server's own
    proxy-header handling, if at all."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        zone: Zone | str,
        allowed_networks: Iterable[IPNetwork | str] = (),
        exempt_paths: Collection[str] = DEFAULT_EXEMPT_PATHS,
    ) -> None:
        self.app = app
        self.zone = Zone(zone)
        self.allowed_networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(n) for n in allowed_networks
        )
        self.exempt_paths = frozenset(exempt_paths)
        self.denied = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.zone is not Zone.CORE
            or scope["type"] not in ("http", "websocket")
            or scope.get("path") in self.exempt_paths
            or self._allowed(scope.get("client"))
        ):
            await self.app(scope, receive, send)
            return
        self.denied += 1
        _log.warning(
            "zone guard refused a caller outside the core networks (%d so far)", self.denied
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse(
            {
                "code": "zone_denied",
                "message": "this core-zone service does not accept calls from this network",
            },
            status_code=403,
        )
        await response(scope, receive, send)

    def _allowed(self, client: object) -> bool:
        return client_in_networks(client, self.allowed_networks)


def client_in_networks(client: object, networks: Iterable[IPNetwork]) -> bool:
    """Whether an ASGI `client` (host, port) is inside one of `networks`; IPv4-mapped IPv6
    addresses count as their IPv4 form, a zone index is ignored, anything unparsable is out."""
    if not isinstance(client, list | tuple) or not client or not isinstance(client[0], str):
        return False
    try:
        address = ipaddress.ip_address(client[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
