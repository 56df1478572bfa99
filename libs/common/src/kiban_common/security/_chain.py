"""The hash chain of the audit log: each entry commits to the one before it.

`hash(n) = sha256(hash(n-1) | n | canonical(entry n))`, starting from a fixed genesis value.
Deleting, altering or reordering an entry changes every hash after it, so `verify` names the
first entry whose stored hash no longer matches; anchors (the hash of every N-th entry, kept in
a second append-only table) also catch a truncated tail.

Pure functions: the writer (`AuditLog`) and `kiban audit verify` both use them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
# The columns an entry's hash covers, in order. `seq`, `prev_hash` and `hash` are the chain.
CHAINED_FIELDS = (
    "at",
    "kind",
    "principal",
    "method",
    "route",
    "status",
    "source",
    "request_id",
    "trace_id",
    "duration_ms",
    "action",
    "refs",
    "count",
    "purpose",
)


def canonical(entry: Mapping[str, Any]) -> str:
    """The entry as the chain sees it: fixed field order, UTC times, compact JSON."""
    values = []
    for name in CHAINED_FIELDS:
        value = entry.get(name)
        if isinstance(value, datetime):
            value = _utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        elif isinstance(value, float):
            value = round(value, 3)
        values.append(value)
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def link(prev_hash: str, seq: int, payload: str) -> str:
    return hashlib.sha256(f"{prev_hash}|{seq}|{payload}".encode()).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    entries: int
    last_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None


def verify(
    entries: Iterable[Mapping[str, Any]], anchors: Mapping[int, str] | None = None
) -> ChainReport:
    """Walk the entries in `seq` order; report the first one that breaks the chain."""
    prev, expected_seq, count = GENESIS, 1, 0
    for entry in entries:
        seq = int(entry["seq"])
        if seq != expected_seq:
            missing = "missing or reordered" if seq > expected_seq else "reordered"
            return ChainReport(count, prev, expected_seq, f"entry {expected_seq} {missing}")
        if entry["prev_hash"] != prev:
            return ChainReport(count, prev, seq, "does not point at the entry before it")
        recomputed = link(prev, seq, canonical(entry))
        if entry["hash"] != recomputed:
            return ChainReport(count, prev, seq, "content does not match its hash (altered)")
        anchored = (anchors or {}).get(seq)
        if anchored is not None and anchored != recomputed:
            return ChainReport(count, prev, seq, "differs from its anchor")
        prev, expected_seq, count = recomputed, seq + 1, count + 1
    beyond = [s for s in (anchors or {}) if s >= expected_seq]
    if beyond:
        first = min(beyond)
        return ChainReport(count, prev, expected_seq, f"log ends before anchored entry {first}")
    return ChainReport(count, prev)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
