"""Settings of the review service: the common settings with this service's zone and port, and
the committee's rules (`KIBAN_REVIEW__QUORUM`, `KIBAN_REVIEW__STATS_WINDOW_DAYS`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8105


class ReviewRules(BaseModel):
    """The committee's decision rule and the promptness window."""

    # Reviews needed in a round before the chair may decide (each expertise group must also be
    # among them, so fewer than 3 is in effect 3).
    quorum: int = Field(default=3, ge=1, le=100)
    # `GET /v1/stats` gives the median time to decision over decisions in this many days.
    stats_window_days: int = Field(default=90, ge=1, le=3660)
    # Offset of the committee's calendar from UTC, in hours: approval dates and the
    # certified-user expiry day are days of this calendar (Japan: +9, no daylight saving).
    utc_offset_hours: int = Field(default=9, ge=-12, le=14)


class ReviewSettings(KibanSettings):
    zone: Zone = Zone.INFORMATION
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    review: ReviewRules = Field(default_factory=ReviewRules)
