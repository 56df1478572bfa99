"""The expiry sweep: a background loop that marks ready releases past `expires_at` as expired
and announces it (`release-published`, status `expired`). Downloads check the expiry on their
own, so a release is never served after it expires even between two sweeps."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kiban_common.service import ServiceRuntime
from kiban_release.context import ReleaseContext
from kiban_release.domain.release import ReleaseStatus
from kiban_release.events import release_published
from kiban_release.store import releases as store

log = logging.getLogger("kiban.release")


async def expire_due(runtime: ServiceRuntime) -> int:
    """One pass: expire every ready release whose time is up. Returns how many."""
    context: ReleaseContext = runtime.context
    expired = 0
    while True:
        async with runtime.transaction() as tx:
            conn = await tx.session.connection()
            now = context.clock.now()
            due = await store.releases_due_for_expiry(conn, now, limit=200)
            for release in due:
                await store.update_release(
                    conn,
                    release.id,
                    status=ReleaseStatus.EXPIRED.value,
                    ended_at=now,
                    ended_by="expiry",
                    updated_at=now,
                )
                await tx.emit(release_published(release, "expired"))
        expired += len(due)
        if len(due) < 200:
            break
    if expired:
        log.info("expired %d release(s)", expired)
    return expired


async def expiry_sweep(runtime: ServiceRuntime) -> None:
    context: ReleaseContext = runtime.context
    interval = context.settings.release.sweep_interval_seconds
    while not runtime.stopping.is_set():
        await expire_due(runtime)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.stopping.wait(), timeout=interval)
