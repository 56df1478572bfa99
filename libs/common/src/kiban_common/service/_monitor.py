"""The access monitor of one service (rule 24: access watched in real time, unscheduled access
blocked at once, not just logged).

Every authenticated call passes `check`: a principal with an active block gets 403 `blocked`;
otherwise the policy in settings (`KIBAN_MONITOR__*`) is applied — kind served in this zone,
source network, hours, read volume per window — and the first breach blocks the principal in the
database (so every replica refuses it), appends the block to the audit chain and publishes
`kiban.security.alert-raised.v1` through the outbox, all in one transaction. Only an operator
lifts a block, with a reason (`POST /v1/security/blocks/{principal}/lift`, audited).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from sqlalchemy import and_, func, insert, select, update

from kiban_common.events import ALERT_RAISED, Event
from kiban_common.events._models import AlertRaisedV1
from kiban_common.security import (
    AUDIT_TABLE,
    BLOCKS_TABLE,
    ApiError,
    Principal,
    breached_rule,
    require_scope,
)

if TYPE_CHECKING:
    from kiban_common.service._runtime import ServiceRuntime

Clock = Callable[[], datetime]
Operator = Annotated[Principal, Depends(require_scope("admin"))]


class AccessMonitor:
    def __init__(self, runtime: ServiceRuntime, clock: Clock | None = None) -> None:
        self.runtime = runtime
        self.policy = runtime.settings.monitor
        self.clock = clock or (lambda: datetime.now(UTC))
        self.blocks = runtime.definition.metadata.tables[BLOCKS_TABLE]
        self.audit = runtime.definition.metadata.tables[AUDIT_TABLE]
        # This replica's copy of the actively blocked principals and when it was read.
        self._active: frozenset[str] = frozenset()
        self._read_at = -float("inf")
        self._refreshing = asyncio.Lock()

    async def check(self, principal: Principal, request: Request) -> None:
        if not self.policy.enabled:
            return
        if await self.blocked(principal.subject):
            raise ApiError(403, "blocked", "this principal is blocked; an operator must lift it")
        source = request.client.host if request.client else None
        now = self.clock()
        rule = breached_rule(principal, source, now, self.policy, self.runtime.definition.zone)
        if rule is None and request.method == "GET":
            rule = await self._read_volume(principal, now)
        if rule is not None:
            await self.block(principal.subject, rule, source, now)
            raise ApiError(403, "blocked", f"access refused and blocked (rule: {rule})")

    async def blocked(self, subject: str) -> bool:
        """Whether `subject` has an active block, from a copy of the block list at most
        `blocks_refresh_seconds` old (one query per period for all principals, not one per
        call); 0 reads the database on every call."""
        if self._stale():
            async with self._refreshing:
                if self._stale():
                    await self.refresh()
        return subject in self._active

    async def refresh(self) -> None:
        async with self.runtime.engine.connect() as connection:
            rows = await connection.execute(
                select(self.blocks.c.principal).where(self.blocks.c.lifted_at.is_(None))
            )
            self._active = frozenset(str(row.principal) for row in rows)
        self._read_at = time.monotonic()

    def _stale(self) -> bool:
        return time.monotonic() - self._read_at >= self.policy.blocks_refresh_seconds

    async def block(self, subject: str, rule: str, source: str | None, now: datetime) -> None:
        async with self.runtime.transaction() as tx:
            connection = await tx.session.connection()
            await connection.execute(
                insert(self.blocks).values(
                    principal=subject, rule=rule, source=source, blocked_at=now
                )
            )
            tx.audit("block", refs=[subject], purpose=rule, principal=subject, source=source)
            name = self.runtime.definition.name
            await tx.emit(
                Event(
                    type=ALERT_RAISED,
                    source=f"/kiban/{name}",
                    key=subject,
                    data=AlertRaisedV1(
                        service=name, principal=subject, rule=rule, action="blocked", at=now
                    ),
                )
            )
        self._active = self._active | {subject}

    async def lift(self, subject: str, operator: str, reason: str) -> int:
        async with self.runtime.transaction() as tx:
            connection = await tx.session.connection()
            result = await connection.execute(
                update(self.blocks)
                .where(self.blocks.c.principal == subject, self.blocks.c.lifted_at.is_(None))
                .values(lifted_at=self.clock(), lifted_by=operator, lift_reason=reason)
            )
            lifted = int(result.rowcount or 0)
            if lifted:
                tx.audit("lift_block", refs=[subject], purpose=reason[:128], principal=operator)
        self._active = self._active - {subject}
        return lifted

    async def _read_volume(self, principal: Principal, now: datetime) -> str | None:
        ceiling = self.policy.read_ceilings.get(principal.kind.value)
        if ceiling is None:
            return None
        since = now - timedelta(seconds=ceiling.window_seconds)
        a = self.audit.c
        async with self.runtime.engine.connect() as connection:
            reads = (
                await connection.execute(
                    select(func.count()).where(
                        and_(
                            a.principal == principal.subject,
                            a.at >= since,
                            a.method == "GET",
                            a.kind == "request",
                        )
                    )
                )
            ).scalar_one()
        # This call is the (reads + 1)-th in the window.
        return "read_volume" if int(reads) + 1 > ceiling.limit else None


class LiftRequest(BaseModel):
    reason: str = Field(min_length=3, max_length=500)


def security_router() -> APIRouter:
    """Operator routes every service has: the active blocks, and lifting one with a reason."""
    router = APIRouter(prefix="/v1/security", tags=["security"])

    def monitor(request: Request) -> AccessMonitor:
        value: AccessMonitor = request.app.state.access_monitor
        return value

    @router.get("/blocks", summary="principals blocked by the access monitor")
    async def blocks(operator: Operator, request: Request, active: bool = True) -> dict[str, Any]:
        m = monitor(request)
        query = select(m.blocks).order_by(m.blocks.c.id.desc()).limit(500)
        if active:
            query = query.where(m.blocks.c.lifted_at.is_(None))
        async with m.runtime.engine.connect() as connection:
            rows = [dict(r._mapping) for r in await connection.execute(query)]
        return {"blocks": rows}

    @router.post(
        "/blocks/{principal}/lift",
        summary="lift a block (operators only, with a reason; audited)",
        responses={404: {"description": "no active block"}},
    )
    async def lift(
        principal: str, body: LiftRequest, operator: Operator, request: Request
    ) -> dict[str, Any]:
        lifted = await monitor(request).lift(principal, operator.subject, body.reason)
        if not lifted:
            raise ApiError(404, "not_blocked", "this principal has no active block")
        return {"principal": principal, "lifted": lifted}

    return router
