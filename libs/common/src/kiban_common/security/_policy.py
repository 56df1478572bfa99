"""The access policy as pure rules: given who calls, from where and when, which rule (if any)
does the call break. The monitor (`kiban_common.service`) turns a breach into a block."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from datetime import datetime
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

from kiban_common.events import Zone
from kiban_common.security._principal import Principal, PrincipalKind
from kiban_common.security._zone import principal_allowed_in_zone
from kiban_common.settings import HoursWindow, MonitorSettings

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def breached_rule(
    principal: Principal,
    source: str | None,
    now: datetime,
    policy: MonitorSettings,
    zone: Zone,
) -> str | None:
    """`unknown_principal`, `zone`, `network` or `hours`, or None when the call is allowed."""
    if principal.kind is PrincipalKind.UNKNOWN:
        return "unknown_principal"
    kinds: Collection[str] | None = policy.kinds
    if not principal_allowed_in_zone(principal, zone, kinds):
        return "zone"
    networks = _networks_for(principal.subject, policy)
    if networks is not None and not _from_any(source, networks):
        return "network"
    window = policy.hours.get(principal.kind.value)
    if window is not None and not within(window, now):
        return "hours"
    return None


def within(window: HoursWindow, now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(window.timezone))
    clock = local.time().replace(tzinfo=None)
    if window.start <= window.end:
        return _DAYS[local.weekday()] in window.days and window.start <= clock <= window.end
    # Spans midnight: the part after midnight belongs to the previous day's window.
    if clock >= window.start:
        return _DAYS[local.weekday()] in window.days
    if clock <= window.end:
        return _DAYS[(local.weekday() - 1) % 7] in window.days
    return False


def _networks_for(
    subject: str, policy: MonitorSettings
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """The networks of the most specific pattern matching `subject` (exact beats glob)."""
    if subject in policy.networks:
        return policy.networks[subject]
    matches = [p for p in policy.networks if fnmatchcase(subject, p)]
    if not matches:
        return None
    return policy.networks[max(matches, key=len)]


def _from_any(
    source: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    if source is None:
        return False
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    return any(address in network for network in networks)


__all__ = ["breached_rule", "within"]
