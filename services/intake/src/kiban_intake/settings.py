"""Settings of the intake service: the common settings with this service's zone and port, plus
the collection rules and the size limits of submissions (`KIBAN_NOTICE_PERIOD_DAYS`, ...)."""

from __future__ import annotations

from pydantic import Field

from kiban_common.events import Zone
from kiban_common.settings import HttpSettings, KibanSettings

PORT = 8101
MiB = 1024 * 1024


class IntakeSettings(KibanSettings):
    zone: Zone = Zone.CORE
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=PORT))
    # RULES.md 2: the waiting period after a notice before records may be provided (days).
    notice_period_days: int = Field(default=30, ge=0, le=3650)
    # Dates (notice periods, ages) are counted in this time zone.
    timezone: str = "Asia/Tokyo"
    # Largest `POST /v1/bundles` body (413 above it).
    bundle_max_bytes: int = Field(default=32 * MiB, ge=1024)
    # Largest `POST /v1/bulk` body (413 above it; the body is streamed, never held whole).
    bulk_max_bytes: int = Field(default=4096 * MiB, ge=1024)
    bulk_max_line_bytes: int = Field(default=4 * MiB, ge=1024)
    # Bulk: resources buffered before they are written (bounds memory per request).
    bulk_flush_resources: int = Field(default=2000, ge=1, le=100_000)
    # How often the scheduler looks for held records whose waiting period has ended (s).
    scheduler_interval_seconds: float = Field(default=60.0, gt=0)
