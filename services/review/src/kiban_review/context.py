"""What routes share for the life of the service: the rules and the clock.

The clock is injectable (`context.clock = lambda: ...`) so tests can move through days
(certification expiry, the 90-day promptness window) without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from kiban_review.settings import ReviewRules


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ReviewContext:
    rules: ReviewRules
    clock: Callable[[], datetime] = field(default=_utc_now)

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        return self.clock().astimezone(UTC)

    @property
    def calendar(self) -> timezone:
        """The committee's calendar (approval dates, certification days)."""
        return timezone(timedelta(hours=self.rules.utc_offset_hours))

    def day_of(self, at: datetime) -> date:
        return at.astimezone(self.calendar).date()

    def today(self) -> date:
        return self.day_of(self.now())
