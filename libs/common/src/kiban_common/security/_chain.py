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
    pending: int = 0  # committed entries not linked into the chain yet

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None and self.reason is None


class ChainVerifier:
    """Checks entries fed in `seq` order, a page at a time, so a long log is never held in
    memory whole. `feed` returns the report of the first broken entry; `finish` the final one."""

    def __init__(self, anchors: Mapping[int, str] | None = None) -> None:
        self.anchors = dict(anchors or {})
        self.prev, self.expected_seq, self.count = GENESIS, 1, 0

    def feed(self, entry: Mapping[str, Any]) -> ChainReport | None:
        seq = int(entry["seq"])
        if seq != self.expected_seq:
            missing = "missing or reordered" if seq > self.expected_seq else "reordered"
            return self._bad(self.expected_seq, f"entry {self.expected_seq} {missing}")
        if entry["prev_hash"] != self.prev:
            return self._bad(seq, "does not point at the entry before it")
        recomputed = link(self.prev, seq, canonical(entry))
        if entry["hash"] != recomputed:
            return self._bad(seq, "content does not match its hash (altered)")
        anchored = self.anchors.get(seq)
        if anchored is not None and anchored != recomputed:
            return self._bad(seq, "differs from its anchor")
        self.prev, self.expected_seq, self.count = recomputed, seq + 1, self.count + 1
        return None

    def finish(self) -> ChainReport:
        beyond = [s for s in self.anchors if s >= self.expected_seq]
        if beyond:
            return self._bad(self.expected_seq, f"log ends before anchored entry {min(beyond)}")
        return ChainReport(self.count, self.prev)

    def _bad(self, seq: int, reason: str) -> ChainReport:
        return ChainReport(self.count, self.prev, seq, reason)


def verify(
    entries: Iterable[Mapping[str, Any]], anchors: Mapping[int, str] | None = None
) -> ChainReport:
    """Walk the entries in `seq` order; report the first one that breaks the chain."""
    verifier = ChainVerifier(anchors)
    for entry in entries:
        if (bad := verifier.feed(entry)) is not None:
            return bad
    return verifier.finish()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
