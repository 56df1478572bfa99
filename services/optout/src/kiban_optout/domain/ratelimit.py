"""A token bucket per principal: `burst` calls at once, refilled at `per_second`.

In-process and per replica (N replicas admit up to N times the rate); the buckets of the
least recently seen principals are dropped beyond `max_principals`, which only ever forgives.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        *,
        burst: int,
        per_second: float,
        clock: Callable[[], float],
        max_principals: int = 100_000,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("a rate limit needs burst >= 1 and per_second > 0")
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._max = max_principals
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, principal: str) -> float:
        """Take one token: 0.0 when allowed, else the seconds until a token is back."""
        now = self._clock()
        bucket = self._buckets.pop(principal, None)
        if bucket is None:
            bucket = _Bucket(tokens=float(self.burst), updated=now)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.per_second)
            bucket.updated = now
        self._buckets[principal] = bucket
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.per_second


def retry_after_header(wait: float) -> str:
    """Whole seconds, at least 1 (RFC 9110 `Retry-After` delay-seconds)."""
    return str(max(1, math.ceil(wait)))
