"""Settings of the optout service: the common settings with this service's zone and port, and
the service's own rules (`KIBAN_OPTOUT__*`, `KIBAN_RATE_LIMIT__*`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8102


class OptoutRules(BaseModel):
    """Who may ask, and which institutions exist."""

    # A guardian may ask for a person under this age on the request date: the Civil Code's
    # age of majority (18 since 2022). The seeds' 16 is the age below which the guardian is
    # *notified* too (rule 3); a guardian's stop request for a 16- or 17-year-old only ever
    # protects, so it is accepted. A person of any age who lacks capacity is handled at a
    # counter (`institution_window`).
    guardian_age_limit: int = Field(default=18, ge=1, le=30)
    # optout holds no institution registry (intake does, in the core zone): a code must have
    # this form (10-digit medical institution codes, 6- or 8-digit municipality and insurer
    # numbers) and, when `known_institutions` is not empty, be one of them.
    institution_code_pattern: str = r"^[0-9]{6,10}$"
    known_institutions: list[str] = Field(default_factory=list)
    # The calendar day of "today" (birth dates, ages, future dates) is taken in this zone.
    timezone: str = "Asia/Tokyo"


class RateLimitSettings(BaseModel):
    """A token bucket per principal over every optout route; beyond it 429 + Retry-After.
    Institution windows file for many people, so they get their own, larger bucket."""

    enabled: bool = True
    burst: int = Field(default=10, ge=1)
    per_second: float = Field(default=0.5, gt=0)
    window_burst: int = Field(default=100, ge=1)
    window_per_second: float = Field(default=20.0, gt=0)


class OptoutSettings(KibanSettings):
    zone: Zone = Zone.INFORMATION
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    optout: OptoutRules = Field(default_factory=OptoutRules)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
