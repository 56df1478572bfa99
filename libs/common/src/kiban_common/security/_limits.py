"""Request limits every API has: a per-caller rate (429) and a body size (413).

The caller of a request is its bearer token (hashed; one token belongs to one principal) or,
without one, its address, so floods of bad tokens are limited too. Token buckets live in each
replica's memory: the limit per replica is the setting. Health probes are exempt.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MAX_CALLERS = 50_000


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rate: float,
        burst: int,
        exempt_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.rate = rate
        self.burst = burst
        self.exempt_paths = frozenset(exempt_paths)
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.rate <= 0 or scope.get("path") in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        wait = self._take(_caller(scope))
        if wait > 0:
            await _reject(
                send,
                429,
                "rate_limited",
                "too many requests from this caller",
                retry_after=math.ceil(wait),
            )
            return
        await self.app(scope, receive, send)

    def _take(self, caller: str) -> float:
        """Seconds until a token is available (0 when one was taken)."""
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[caller] = bucket
            if len(self._buckets) > _MAX_CALLERS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from `Content-Length`, or as soon as a streamed
    body passes it. `limits` overrides the default per path (None: no limit, for endpoints that
    stream large uploads themselves)."""

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, limits: Mapping[str, int | None] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(scope.get("path", ""), self.max_bytes)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _reject(send, 413, "body_too_large", f"the body exceeds {limit} bytes")
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except _TooLarge:
            if not started:
                await _reject(send, 413, "body_too_large", f"the body exceeds {limit} bytes")


class _TooLarge(Exception):
    pass


def _caller(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return "t:" + hashlib.sha256(value).hexdigest()[:32]
    client = scope.get("client")
    return "a:" + (str(client[0]) if client else "-")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(
    send: Send, status: int, code: str, message: str, *, retry_after: int | None = None
) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
