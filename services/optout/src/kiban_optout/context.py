"""What the optout routes and handlers share, built once per running service."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from kiban_common.service import ServiceCrypto, ServiceRuntime
from kiban_optout.domain.ratelimit import RateLimiter
from kiban_optout.domain.request import Policy
from kiban_optout.domain.subject import Subject
from kiban_optout.settings import OptoutSettings

if TYPE_CHECKING:
    from kiban_optout.api._taking import Taker

SUBJECT_COLUMN = "kiban.optout.optout_requests.subject"
SUBJECT_INDEX = "kiban.optout.subject"
REQUEST_INDEX = "kiban.optout.request"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class OptoutContext:
    crypto: ServiceCrypto
    policy: Policy
    timezone: ZoneInfo
    patient_limiter: RateLimiter | None
    window_limiter: RateLimiter | None
    # Replaceable in tests: every rule that depends on the date reads this clock.
    clock: Callable[[], datetime] = field(default=_utcnow)
    # The group commit of POST /v1/optouts, made on the first request.
    taker: Taker | None = None

    def now(self) -> datetime:
        return self.clock()

    def today(self) -> date:
        return self.clock().astimezone(self.timezone).date()

    def subject_index(self, subject: Subject) -> str:
        return self.crypto.index.digest(subject.identity(), context=SUBJECT_INDEX)

    def request_key(self, subject: Subject, scope: str, institution_code: str | None) -> str:
        value = "\x1f".join([subject.identity(), scope, institution_code or ""])
        return self.crypto.index.digest(value, context=REQUEST_INDEX)


def build_context(runtime: ServiceRuntime) -> OptoutContext:
    settings = runtime.settings
    assert isinstance(settings, OptoutSettings)
    rules, limits = settings.optout, settings.rate_limit
    limiters: tuple[RateLimiter | None, RateLimiter | None] = (None, None)
    if limits.enabled:
        limiters = (
            RateLimiter(burst=limits.burst, per_second=limits.per_second, clock=time.monotonic),
            RateLimiter(
                burst=limits.window_burst,
                per_second=limits.window_per_second,
                clock=time.monotonic,
            ),
        )
    return OptoutContext(
        crypto=runtime.crypto,
        policy=Policy(
            guardian_age_limit=rules.guardian_age_limit,
            institution_code_pattern=rules.institution_code_pattern,
            known_institutions=frozenset(rules.known_institutions),
        ),
        timezone=ZoneInfo(rules.timezone),
        patient_limiter=limiters[0],
        window_limiter=limiters[1],
    )
