"""The build worker: a supervised background loop that turns queued builds into released files.

One build, start to finish:
1. claim it (lease with heartbeat; see `store.builds`);
2. read a snapshot of the cohort in a short transaction, with the purge counter read first;
3. process it (cohort, flattening, anonymization via the engine) and write the files to a
   staging directory, in a worker thread, outside any transaction;
4. in ONE transaction: lock the purge counter, and if a purge committed since the snapshot hit a
   person of the dataset, record it on the build and go back to 2 without them (the staged
   files are discarded); otherwise move the files into place, mark the build `ready` and emit
   `dataset-built` — or `failed` with the reason, without files, when the privacy check fails.

Because purges take the same lock (`research.bump_purge_seq`), a purge either commits before
step 4's check (and is seen) or waits until the dataset is released.

Restart: a build interrupted by a restart (or a crash) keeps `running` with a stale heartbeat;
after `lease_seconds` a worker claims it again and retries it from the start (the staging
directory is rewritten). After `max_attempts` attempts it fails and `dataset-built` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from kiban_anonymizer.context import AnonymizerContext
from kiban_anonymizer.domain.dataset import BuildFailed, Dataset, Options, Request, build
from kiban_anonymizer.store import builds, files, research
from kiban_anonymizer.store.builds import Claimed
from kiban_common.events import (
    DATASET_BUILT,
    BuiltFile,
    DatasetBuiltV1,
    DatasetSpec,
    Event,
    PrivacySummary,
)
from kiban_common.outbox import Transaction

log = logging.getLogger("kiban.anonymizer.builder")
SOURCE = "/kiban/anonymizer"


async def build_loop(runtime: Any) -> None:
    """Claim and run builds until the service stops."""
    context: AnonymizerContext = runtime.context
    settings = context.settings.build
    while not runtime.stopping.is_set():
        async with runtime.transaction() as tx:
            claimed = await builds.claim_next(
                tx.session,
                context.worker_id,
                context.clock(),
                timedelta(seconds=settings.lease_seconds),
            )
        if claimed is None:
            context.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(context.wake.wait(), settings.poll_interval_ms / 1000)
            continue
        await run_build(runtime, claimed)


async def run_build(runtime: Any, claimed: Claimed) -> None:
    context: AnonymizerContext = runtime.context
    settings = context.settings.build
    log.info("build %s started (attempt %d)", claimed.build_id, claimed.attempts)
    if claimed.attempts > settings.max_attempts:
        await _fail(
            runtime,
            claimed,
            f"interrupted {claimed.attempts - 1} times; gave up after {settings.max_attempts}",
        )
        return
    beat = asyncio.create_task(_heartbeat(runtime, claimed.build_id))
    try:
        await _build(runtime, claimed)
    except Exception as exc:  # a bug or an outage: fail loudly, never ship a partial dataset
        log.error("build %s failed (%s)", claimed.build_id, type(exc).__name__)
        await _fail(runtime, claimed, f"internal error ({type(exc).__name__})")
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat


async def _heartbeat(runtime: Any, build_id: str) -> None:
    context: AnonymizerContext = runtime.context
    interval = context.settings.build.lease_seconds / 3
    while True:
        await asyncio.sleep(interval)
        async with runtime.transaction() as tx:
            await builds.heartbeat(tx.session, build_id, context.worker_id, context.clock())


def _request(spec: DatasetSpec) -> Request:
    period = spec.cohort.period
    return Request(
        kind=spec.kind,
        resources=spec.resources,
        condition_codes=spec.cohort.condition_codes,
        period_start=period.start if period else None,
        period_end=period.end if period else None,
        k=spec.k,
        l=spec.l,
        sensitive=spec.sensitive,
    )


async def _build(runtime: Any, claimed: Claimed) -> None:
    context: AnonymizerContext = runtime.context
    settings = context.settings.build
    spec = DatasetSpec.model_validate(claimed.spec)
    request = _request(spec)
    reference = claimed.requested_at.date()
    if request.period_end is not None:
        reference = min(reference, request.period_end)
    application_id = claimed.application_id
    options = Options(
        reference_date=reference,
        date_mode=settings.date_mode,
        shift_days=settings.date_shift_days,
        suppression_limit=settings.suppression_limit,
        method=settings.method,
        risk_threshold=settings.risk_threshold,
        rng=context.rng,
        stable_id=lambda pseudonym: context.stable_id(application_id, pseudonym),
    )
    staging = files.staging_dir(context.files_dir, claimed.build_id)
    reruns = 0
    while True:
        async with runtime.transaction() as tx:
            snapshot, seq = await research.load_snapshot(tx.session, request)
        if context.after_snapshot is not None:
            await context.after_snapshot(claimed.build_id)
        try:
            dataset = await asyncio.to_thread(build, snapshot, request, options)
        except BuildFailed as failure:
            await _fail(runtime, claimed, failure.reason)
            return
        written = await asyncio.to_thread(files.write_tables, dataset.tables, staging)
        async with runtime.transaction() as tx:
            if await research.lock_purge_seq(tx.session) != seq:
                late = await research.purged_since(tx.session, seq) & dataset.persons
                if late:
                    await builds.record_rerun(tx.session, claimed.build_id, len(late))
                    reruns += 1
                    log.info("build %s: a purge hit its cohort; rebuilding", claimed.build_id)
                    files.discard(staging)
                    if reruns > settings.max_purge_reruns:
                        await _emit_failed(
                            tx, claimed, "purges kept arriving during the build", context.clock()
                        )
                        return
                    continue
            final = context.files_dir / claimed.release_id
            await asyncio.to_thread(files.publish, staging, final)
            await _emit_ready(tx, claimed, dataset, written, final, context.clock())
            return


async def _emit_ready(
    tx: Transaction,
    claimed: Claimed,
    dataset: Dataset,
    written: list[files.WrittenFile],
    final: Path,
    now: datetime,
) -> None:
    built = [
        BuiltFile(
            name=f.name, rows=f.rows, sha256=f.sha256, uri=(final / f.name).resolve().as_uri()
        )
        for f in written
    ]
    await builds.finish(
        tx.session,
        claimed.build_id,
        status=builds.READY,
        now=now,
        report=dataset.report,
        files=[f.model_dump(mode="json") for f in built],
    )
    await tx.emit(
        Event(
            type=DATASET_BUILT,
            source=SOURCE,
            key=claimed.release_id,
            data=DatasetBuiltV1(
                release_id=claimed.release_id,
                build_id=claimed.build_id,
                status="ready",
                files=built,
                privacy=PrivacySummary(
                    k=int(claimed.spec.get("k", 5)),
                    achieved_k=dataset.achieved_k,
                    l=claimed.spec.get("l"),
                    achieved_l=dataset.achieved_l,
                    suppressed=dataset.suppressed,
                ),
            ),
        )
    )
    log.info("build %s ready", claimed.build_id)


async def _fail(runtime: Any, claimed: Claimed, reason: str) -> None:
    context: AnonymizerContext = runtime.context
    async with runtime.transaction() as tx:
        await _emit_failed(tx, claimed, reason, context.clock())
    files.discard(files.staging_dir(context.files_dir, claimed.build_id))


async def _emit_failed(tx: Transaction, claimed: Claimed, reason: str, now: datetime) -> None:
    await builds.finish(tx.session, claimed.build_id, status=builds.FAILED, now=now, reason=reason)
    await tx.emit(
        Event(
            type=DATASET_BUILT,
            source=SOURCE,
            key=claimed.release_id,
            data=DatasetBuiltV1(
                release_id=claimed.release_id,
                build_id=claimed.build_id,
                status="failed",
                reason=reason,
                privacy=PrivacySummary(k=int(claimed.spec.get("k", 5)), l=claimed.spec.get("l")),
            ),
        )
    )
    log.info("build %s failed", claimed.build_id)
