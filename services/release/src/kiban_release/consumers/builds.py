"""`kiban.anonymizer.dataset-built.v1` → the release is `ready` (or `failed`).

Before a release is ready every file is checked where the anonymizer wrote it (convention 7:
a `file://` uri under the shared files directory): the name is one safe path segment, the file
exists inside `files_dir`, and its SHA-256 is the one announced. Any mismatch fails the release
with the file's name and what was wrong (never its content). Then the `person_id` values of every
file are indexed for `trace`, the manifest is signed, the fee statement issued, and
`release-published` (`ready`) goes out with the state change.

A result for an unknown release, or for one no longer `building` (revoked meanwhile, or a
redelivery), changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.events import BuiltFile, DatasetBuiltV1, Event
from kiban_common.outbox import Transaction
from kiban_release import datafile
from kiban_release.context import ReleaseContext
from kiban_release.domain.manifest import build_manifest
from kiban_release.domain.release import ReleaseFile, ReleaseStatus, safe_file_name
from kiban_release.domain.tariff import fee_statement
from kiban_release.events import release_published
from kiban_release.store import releases as store

log = logging.getLogger("kiban.release")


@dataclass
class Verified:
    files: list[ReleaseFile] = field(default_factory=list)
    person_ids: set[str] = field(default_factory=set)
    failure: str | None = None


async def apply_build(
    context: ReleaseContext, event: Event[DatasetBuiltV1], tx: Transaction
) -> None:
    data = event.data
    conn = await tx.session.connection()
    release = await store.get_release(conn, data.release_id, for_update=True, with_files=False)
    if release is None:
        log.warning("dataset-built for unknown release %s: ignored", data.release_id)
        return
    if release.status is not ReleaseStatus.BUILDING:
        return
    now = context.clock.now()
    if data.status == "failed":
        await _fail(
            conn, release.id, data.reason or "the anonymizer could not build the dataset", now
        )
        return
    verified = await asyncio.to_thread(verify_files, context.files_dir, data.files)
    if verified.failure is not None:
        log.warning("release %s failed verification: %s", release.id, verified.failure)
        await _fail(conn, release.id, verified.failure, now)
        return
    expires_at = now + timedelta(days=context.settings.release.expiry_days)
    privacy = data.privacy.model_dump(mode="json") if data.privacy is not None else None
    manifest = build_manifest(
        release_id=release.id,
        application_id=release.application_id,
        recipient=release.applicant,
        organization=release.organization,
        kind=release.kind,
        build_id=data.build_id,
        issued_at=now,
        expires_at=expires_at,
        files=[
            {"name": f.name, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256}
            for f in verified.files
        ],
        privacy=privacy,
    )
    fee = fee_statement(
        context.tariff,
        release_id=release.id,
        application_id=release.application_id,
        rows=sum(f.rows for f in verified.files),
        issued_at=now,
    )
    await store.insert_files(conn, release.id, verified.files)
    indexed = await store.insert_persons(conn, release.id, verified.person_ids)
    await store.update_release(
        conn,
        release.id,
        status=ReleaseStatus.READY.value,
        build_id=data.build_id,
        privacy=privacy,
        manifest=context.signer.sign(manifest),
        fee=fee,
        ready_at=now,
        expires_at=expires_at,
        updated_at=now,
    )
    ready = await store.get_release(conn, release.id)
    assert ready is not None
    await tx.emit(release_published(ready, "ready"))
    log.info(
        "release %s ready: %d files, %d person ids indexed", release.id, len(ready.files), indexed
    )


async def _fail(conn: AsyncConnection, release_id: str, reason: str, now: datetime) -> None:
    await store.update_release(
        conn,
        release_id,
        status=ReleaseStatus.FAILED.value,
        reason=reason[:500],
        updated_at=now,
    )


def verify_files(files_dir: Path, files: list[BuiltFile]) -> Verified:
    """Check every announced file (blocking I/O: runs in a thread)."""
    out = Verified()
    if not files:
        out.failure = "the build announced no files"
        return out
    names: set[str] = set()
    root = files_dir.resolve()
    for index, built in enumerate(files):
        label = f"file {index + 1}"
        if not safe_file_name(built.name) or built.name in names:
            out.failure = f"{label}: the name is not a single, unique path segment"
            return out
        names.add(built.name)
        label = f"file {built.name!r}"
        path = _local_path(built.uri)
        if path is None:
            out.failure = f"{label}: uri is not a file:// uri"
            return out
        path = path.resolve()
        if not path.is_relative_to(root):
            out.failure = f"{label}: uri is outside the release files directory"
            return out
        if not path.is_file():
            out.failure = f"{label}: not found"
            return out
        found = datafile.digest(path)
        if found.sha256 != built.sha256:
            out.failure = f"{label}: sha256 does not match the announced digest"
            return out
        try:
            ids = datafile.read_ids(path)
        except datafile.UnreadableFile as exc:
            # Still delivered and traceable as a whole file (SHA-256); its rows are in the
            # release's other files too (the anonymizer writes each table as CSV and Parquet).
            log.warning("%s: person ids not indexed: %s", label, exc)
            ids = datafile.FileIds()
        else:
            if not ids.has_person_column:
                log.warning("%s has no person_id column: traceable only as a whole file", label)
        out.person_ids |= ids.person_ids
        out.files.append(
            ReleaseFile(
                name=built.name,
                rows=built.rows,
                sha256=found.sha256,
                bytes=found.bytes,
                path=str(path),
            )
        )
    return out


def _local_path(uri: str | None) -> Path | None:
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(unquote(parsed.path)))
