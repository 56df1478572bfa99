"""`kiban release ...`: tools on files and on the release service's database.

- `kiban release trace FILE [--database-url URL] [--json]`: names the release and recipient a
  file, or a leaked subset of its rows (CSV/TSV, NDJSON or Parquet), came from. Database:
  `--database-url`, else the service's settings (`KIBAN_DATABASE_URL`), else the embedded
  default `.kiban/release.db`. Exit status 0 when traced, 1 when nothing matched, 2 on an
  error (an unreadable file included).
- `kiban release verify MANIFEST.json [--public-key PEM]`: checks a manifest's signature
  offline. Exit status 0 when valid, 1 when not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from kiban_common.devstate import state_dir
from kiban_common.settings import SettingsError, load_settings
from kiban_release.datafile import UnreadableFile
from kiban_release.domain.manifest import verify
from kiban_release.domain.trace import TraceResult, Verdict
from kiban_release.settings import ReleaseSettings
from kiban_release.tracing import trace_with_url


def add_commands(subparsers: Any) -> None:
    release = subparsers.add_parser(
        "release", help="release tools: trace a leaked file, verify a manifest"
    )
    actions = release.add_subparsers(dest="release_command", required=True, metavar="ACTION")

    trace = actions.add_parser(
        "trace", help="name the release and recipient a file (or a subset of its rows) came from"
    )
    trace.add_argument("file", type=Path, help="a released file, or rows copied from one")
    trace.add_argument(
        "--database-url", help="the release service's database (default: KIBAN_DATABASE_URL)"
    )
    trace.add_argument("--json", action="store_true", help="print the result as JSON")
    trace.set_defaults(run=run_trace)

    check = actions.add_parser("verify", help="verify a release manifest's signature offline")
    check.add_argument("manifest", type=Path, help="the JSON of GET /v1/releases/{id}/manifest")
    check.add_argument(
        "--public-key", type=Path, help="the operator's public key (PEM) to verify against"
    )
    check.set_defaults(run=run_verify)


def database_url(explicit: str | None) -> str:
    if explicit:
        return explicit
    try:
        return load_settings(ReleaseSettings, bus="memory").database_url
    except SettingsError:
        embedded = state_dir() / "release.db"
        if embedded.exists():
            return f"sqlite:///{embedded.resolve()}"
        raise


def run_trace(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        print(f"kiban release trace: {args.file} is not a file", file=sys.stderr)
        return 2
    try:
        url = database_url(args.database_url)
    except SettingsError as exc:
        print(f"kiban release trace: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(trace_with_url(url, args.file))
    except UnreadableFile as exc:
        print(f"kiban release trace: {args.file.name}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(result), indent=2) if args.json else describe(result))
    return 1 if result.verdict is Verdict.NONE else 0


def run_verify(args: argparse.Namespace) -> int:
    try:
        envelope = json.loads(args.manifest.read_text())
        key = args.public_key.read_bytes() if args.public_key else None
    except (OSError, ValueError) as exc:
        print(f"kiban release verify: cannot read input ({type(exc).__name__})", file=sys.stderr)
        return 2
    if not isinstance(envelope, dict):
        print("kiban release verify: not a manifest envelope", file=sys.stderr)
        return 2
    ok = verify(envelope, key)
    manifest = envelope.get("manifest") or {}
    release_id = manifest.get("release_id") if isinstance(manifest, dict) else None
    pinned = "the given public key" if key else "the key it carries (pass --public-key to pin)"
    if ok:
        print(f"valid: manifest of release {release_id} signed by {pinned}")
        return 0
    print(f"INVALID: the signature does not match the manifest of release {release_id}")
    return 1


def as_json(result: TraceResult) -> dict[str, Any]:
    return {
        "verdict": result.verdict.value,
        "release_id": result.release_id,
        "application_id": result.application_id,
        "recipient": result.recipient,
        "file_name": result.file_name,
        "ids_in_file": result.ids_in_file,
        "coverage": round(result.coverage, 4),
        "matches": [
            {
                "release_id": c.release_id,
                "application_id": c.application_id,
                "recipient": c.recipient,
                "kind": c.kind,
                "status": c.status,
                "matched": c.matched,
            }
            for c in result.matches
        ],
        "notes": list(result.notes),
    }


def describe(result: TraceResult) -> str:
    lines: list[str] = []
    if result.verdict is Verdict.FILE:
        c = result.contenders[0]
        lines.append(
            f"file {result.file_name!r} of release {c.release_id} (byte for byte), "
            f"application {c.application_id}, recipient {c.recipient}"
        )
    elif result.verdict is Verdict.RELEASE:
        c = result.contenders[0]
        lines.append(
            f"release {c.release_id} ({c.kind}, {c.status}), application {c.application_id}, "
            f"recipient {c.recipient}: {c.matched} of {result.ids_in_file} person ids"
        )
    elif result.verdict is Verdict.APPLICATION:
        c = result.contenders[0]
        lines.append(
            f"application {c.application_id} ({c.kind}), recipient {result.recipient}: "
            f"rows found in {len(result.contenders)} of its releases"
        )
        lines += [f"  release {x.release_id}: {x.matched} ids" for x in result.contenders]
    elif result.verdict is Verdict.AMBIGUOUS:
        lines.append("ambiguous: the rows match several applications")
        lines += [
            f"  release {x.release_id}, application {x.application_id}, recipient "
            f"{x.recipient}: {x.matched} ids"
            for x in result.contenders
        ]
    else:
        lines.append(f"no release holds these rows ({result.ids_in_file} ids looked up)")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
