"""Key rotation for stored field tokens: re-encrypt every value whose key id is not the active
one, in short batches, then prove nothing needs the old keys any more.

A service declares its encrypted columns (`EncryptedColumn`: table, column, and the
associated-data context its code encrypts that column with, fixed or computed from the row).
`rotate_keys` walks each column in primary-key order, a batch at a time:

1. read the next `batch_size` rows whose value is not under the active key (a short read of its
   own: no lock is held while decrypting and encrypting);
2. decrypt each with the key its token names and encrypt it again with the active key, under
   the same context;
3. in one short write transaction, `UPDATE ... SET col = new WHERE pk = ... AND col = old` for
   each row (compare-and-set: a row the running service changed meanwhile keeps its new value),
   and append one data-operation entry to the service's hash-chained audit log (action
   `keys.rotate`, the row ids, how many, which column and key ids; never a value).

Each committed batch is final, so a crash or Ctrl-C loses at most the batch in flight, and a
re-run skips every value already under the active key: nothing is re-encrypted twice.
`stale_values` counts what still uses a non-active key id (per column and key id, plus events
waiting in the outbox), which is what retiring an old key must wait for.

Nothing here logs or raises with a value, a token or key material: reports hold counts, table
and column names and key ids.
"""

from __future__ import annotations

import inspect
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, func, select, true, tuple_, update

from kiban_common.crypto._cipher import VERSION, FieldCipher
from kiban_common.crypto._encoding import b64url_decode
from kiban_common.crypto._errors import CryptoError, DecryptionError
from kiban_common.crypto._keyring import KEY_ID_PATTERN

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement, MetaData, Table
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

RowContext = Callable[[Mapping[str, Any]], str]
ROTATE_ACTION = "keys.rotate"
ROTATE_ROUTE = "kiban keys rotate"
# `v1.` + a key id of at most 32 characters + `.`: enough of a token to read its key id.
_HEADER_CHARS = len(VERSION) + 1 + 32 + 1
_AUDIT_REFS_MAX = 1000


@dataclass(frozen=True)
class EncryptedColumn:
    """A stored column that holds field-cipher tokens (NULL allowed).

    `context` is the associated-data context the service encrypts this column with: a fixed
    string, or a function of the row (it receives the primary-key columns and `row_columns`).
    `key` names the columns that identify a row (default: the table's primary key).
    """

    table: str
    column: str
    context: str | RowContext
    key: tuple[str, ...] = ()
    row_columns: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def context_for(self, row: Mapping[str, Any]) -> str:
        return self.context if isinstance(self.context, str) else self.context(row)


@dataclass
class ColumnProgress:
    """How far one column is: `pending` values were not under the active key at the start."""

    name: str
    total: int = 0  # non-null values
    pending: int = 0
    rotated: int = 0
    changed_meanwhile: int = 0  # compare-and-set misses: the service rewrote the row first
    unreadable: int = 0  # unknown key id, malformed token, or wrong context
    batches: int = 0
    remaining: int = 0  # values not under the active key once the run ended


@dataclass
class RotationReport:
    active_key_id: str
    columns: list[ColumnProgress] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(c.remaining for c in self.columns)

    @property
    def ok(self) -> bool:
        return self.remaining == 0


@dataclass
class StaleReport:
    """Values (per column, per key id) and outbox events still under a non-active key."""

    active_key_id: str
    columns: dict[str, Counter[str]] = field(default_factory=dict)
    outbox: Counter[str] = field(default_factory=Counter)

    @property
    def key_ids_in_use(self) -> set[str]:
        used = {kid for counts in self.columns.values() for kid in counts}
        return used | set(self.outbox)

    @property
    def clean(self) -> bool:
        return not self.key_ids_in_use


Progress = Callable[[ColumnProgress], Awaitable[None] | None]
BeforeWrite = Callable[[EncryptedColumn, list[dict[str, Any]]], Awaitable[None] | None]


def _resolve(metadata: MetaData, spec: EncryptedColumn) -> tuple[Table, list[str]]:
    table = metadata.tables.get(spec.table)
    if table is None:
        raise CryptoError(f"encrypted column {spec.name}: no table {spec.table!r} in the schema")
    if spec.column not in table.c:
        raise CryptoError(f"encrypted column {spec.name}: no such column")
    key = list(spec.key) or [c.name for c in table.primary_key.columns]
    if not key:
        raise CryptoError(f"encrypted column {spec.name}: the table has no primary key")
    for name in (*key, *spec.row_columns):
        if name not in table.c:
            raise CryptoError(f"encrypted column {spec.name}: no column {name!r}")
    return table, key


def _not_under(table: Table, column: str, active_key_id: str) -> ColumnElement[bool]:
    """The value is set and its header is not `v1.<active>.` (exact; no LIKE wildcards)."""
    prefix = f"{VERSION}.{active_key_id}."
    col = table.c[column]
    return and_(col.is_not(None), func.substr(col, 1, len(prefix)) != prefix)


def _after(table: Table, key: list[str], last: tuple[Any, ...] | None) -> ColumnElement[bool]:
    if last is None:
        return true()
    if len(key) == 1:
        after: ColumnElement[bool] = table.c[key[0]] > last[0]
        return after
    return tuple_(*(table.c[k] for k in key)) > tuple_(*last)


async def _count(connection: AsyncConnection, table: Table, where: ColumnElement[bool]) -> int:
    statement = select(func.count()).select_from(table).where(where)
    return int((await connection.execute(statement)).scalar_one())


async def _call(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


def _ref(row: Mapping[Any, Any], key: list[str]) -> str:
    return "/".join(str(row[k]) for k in key)


async def rotate_keys(
    engine: AsyncEngine,
    metadata: MetaData,
    columns: Sequence[EncryptedColumn],
    cipher: FieldCipher,
    *,
    batch_size: int = 500,
    progress: Progress | None = None,
    before_write: BeforeWrite | None = None,
    principal: str = "operator:kiban-cli",
    max_passes: int = 3,
) -> RotationReport:
    """Re-encrypt every stored value of `columns` that is not under the cipher's active key.

    `progress` is called after each committed batch (and once per column at the start);
    `before_write` between reading a batch and writing it (tests use it to race the service).
    A column is walked again (up to `max_passes`) while a pass found rows the service changed
    meanwhile, so a row rewritten by a replica still on the old key is caught the next time.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    active = cipher.keyring.active_key_id
    audit = _audit_log(metadata)
    report = RotationReport(active_key_id=active)
    for spec in columns:
        table, key = _resolve(metadata, spec)
        pending_where = _not_under(table, spec.column, active)
        state = ColumnProgress(name=spec.name)
        report.columns.append(state)
        async with engine.connect() as connection:
            state.total = await _count(connection, table, table.c[spec.column].is_not(None))
            state.pending = await _count(connection, table, pending_where)
        await _call(progress, state)
        for attempt in range(max_passes):
            missed = await _one_pass(
                engine, table, key, spec, cipher, state, pending_where, batch_size,
                audit, principal, progress, before_write, first=attempt == 0,
            )  # fmt: skip
            if not missed:
                break
        async with engine.connect() as connection:
            state.remaining = await _count(connection, table, pending_where)
    if audit is not None:  # link this run's entries now (a running service's chainer would too)
        async with engine.begin() as connection:
            while await audit.chain_pending(connection):
                pass
    return report


async def _one_pass(
    engine: AsyncEngine,
    table: Table,
    key: list[str],
    spec: EncryptedColumn,
    cipher: FieldCipher,
    state: ColumnProgress,
    pending_where: ColumnElement[bool],
    batch_size: int,
    audit: Any,
    principal: str,
    progress: Progress | None,
    before_write: BeforeWrite | None,
    *,
    first: bool,
) -> int:
    """One walk over the column in key order; returns the compare-and-set misses. Values
    that do not open are counted on the first walk and left as they are."""
    col = table.c[spec.column]
    wanted = [table.c[k] for k in key] + [table.c[c] for c in spec.row_columns if c not in key]
    order = [table.c[k] for k in key]
    cas = (
        update(table)
        .where(*(table.c[k] == bindparam(f"_k_{k}") for k in key), col == bindparam("_old"))
        .values({spec.column: bindparam("_new")})
    )
    last: tuple[Any, ...] | None = None
    missed = 0
    while True:
        # A read of its own, so no lock is held while the batch is re-encrypted.
        async with engine.connect() as connection:
            rows = [
                dict(r._mapping)
                for r in await connection.execute(
                    select(*wanted, col.label("_token"))
                    .where(pending_where, _after(table, key, last))
                    .order_by(*order)
                    .limit(batch_size)
                )
            ]
        if not rows:
            return missed
        last = tuple(rows[-1][k] for k in key)
        writes: list[dict[str, Any]] = []
        for row in rows:
            token = row.pop("_token")
            try:
                context = spec.context_for(row)
                plaintext = cipher.decrypt(token, context=context)
            except (DecryptionError, ValueError):
                state.unreadable += int(first)
                continue
            fresh = cipher.encrypt(plaintext, context=context)
            writes.append({"row": row, "old": token, "new": fresh})
        if not writes:
            continue
        await _call(before_write, spec, [w["row"] for w in writes])
        done: list[str] = []
        old_kids: set[str] = set()
        async with engine.begin() as connection:
            # One compare-and-set statement for the batch (executemany), then read back which
            # rows hold the new token: a fresh random nonce makes a match proof of our write.
            await connection.execute(
                cas,
                [
                    {**{f"_k_{k}": w["row"][k] for k in key}, "_old": w["old"], "_new": w["new"]}
                    for w in writes
                ],
            )
            holding = await _current(connection, table, key, col, [w["row"] for w in writes])
            for w in writes:
                ref = _ref(w["row"], key)
                if holding.get(ref) == w["new"]:
                    done.append(ref)
                    old_kids.add(FieldCipher.key_id_of(w["old"]))
                else:
                    missed += 1
            if done and audit is not None:
                await audit.append(
                    connection,
                    [_audit_entry(spec, done, old_kids, cipher.keyring.active_key_id, principal)],
                )
        state.rotated += len(done)
        state.changed_meanwhile += len(writes) - len(done)
        state.batches += 1
        await _call(progress, state)


async def _current(
    connection: AsyncConnection,
    table: Table,
    key: list[str],
    col: Any,
    rows: list[dict[str, Any]],
) -> dict[str, str]:
    """`ref` → the column's value now, for the given rows."""
    cols = [table.c[k] for k in key]
    if len(key) == 1:
        where = cols[0].in_([r[key[0]] for r in rows])
    else:
        where = tuple_(*cols).in_([tuple(r[k] for k in key) for r in rows])
    result = await connection.execute(select(*cols, col.label("_value")).where(where))
    return {_ref(r._mapping, key): r._mapping["_value"] for r in result}


def _audit_log(metadata: MetaData) -> Any:
    # Imported here: the crypto package stays importable without the security package.
    from kiban_common.security import AUDIT_ANCHORS_TABLE, AUDIT_TABLE, AuditLog

    if AUDIT_TABLE not in metadata.tables:
        return None
    return AuditLog(metadata.tables[AUDIT_TABLE], metadata.tables[AUDIT_ANCHORS_TABLE])


def _audit_entry(
    spec: EncryptedColumn, refs: list[str], old_kids: set[str], active: str, principal: str
) -> dict[str, Any]:
    """The same shape as `Transaction.audit` writes: ids only, never a value."""
    return {
        "at": datetime.now(UTC),
        "kind": "data",
        "principal": principal,
        "method": "-",
        "route": ROTATE_ROUTE,
        "status": 0,
        "source": None,
        "request_id": uuid.uuid4().hex,
        "trace_id": None,
        "duration_ms": 0.0,
        "action": ROTATE_ACTION,
        "refs": json.dumps(refs[:_AUDIT_REFS_MAX]),
        "count": len(refs),
        "purpose": f"{spec.name} {','.join(sorted(old_kids))}->{active}"[:128],
    }


async def stale_values(
    engine: AsyncEngine,
    metadata: MetaData,
    columns: Sequence[EncryptedColumn],
    active_key_id: str,
    *,
    batch_size: int = 5000,
) -> StaleReport:
    """Count, per column and key id, the stored values not under `active_key_id`, and the
    outbox events (not yet published) that carry a token under another key id."""
    report = StaleReport(active_key_id=active_key_id)
    async with engine.connect() as connection:
        for spec in columns:
            table, key = _resolve(metadata, spec)
            counts: Counter[str] = Counter()
            where = _not_under(table, spec.column, active_key_id)
            header = func.substr(table.c[spec.column], 1, _HEADER_CHARS).label("_header")
            last: tuple[Any, ...] | None = None
            while True:
                page = (
                    await connection.execute(
                        select(*(table.c[k] for k in key), header)
                        .where(where, _after(table, key, last))
                        .order_by(*(table.c[k] for k in key))
                        .limit(batch_size)
                    )
                ).all()
                if not page:
                    break
                for row in page:
                    counts[_kid_of_header(str(row._mapping["_header"]))] += 1
                last = tuple(row._mapping[k] for k in key)
            if counts:
                report.columns[spec.name] = counts
        report.outbox = await _outbox_kids(connection, metadata, active_key_id, batch_size)
    return report


def _kid_of_header(header: str) -> str:
    parts = header.split(".")
    if len(parts) >= 3 and parts[0] == VERSION and parts[1]:
        return parts[1]
    return "(not a token)"


async def _outbox_kids(
    connection: AsyncConnection, metadata: MetaData, active_key_id: str, batch_size: int
) -> Counter[str]:
    from kiban_common.db import OUTBOX

    counts: Counter[str] = Counter()
    table = metadata.tables.get(OUTBOX)
    if table is None:
        return counts
    marker = f'"{VERSION}.'
    last = None
    while True:
        page = (
            await connection.execute(
                select(table.c.id, table.c.value)
                .where(_after(table, ["id"], last))
                .order_by(table.c.id)
                .limit(batch_size)
            )
        ).all()
        if not page:
            return counts
        for row in page:
            text = bytes(row.value).decode("utf-8", "replace")
            kids = set()
            for piece in text.split(marker)[1:]:
                kid, _, rest = piece.partition(".")
                if kid != active_key_id and _looks_like_token(kid, rest.split('"', 1)[0]):
                    kids.add(kid)
            for kid in kids:
                counts[kid] += 1
        last = (row.id,)


def _looks_like_token(kid: str, body: str) -> bool:
    """`<kid>.<body>` of a field token: a valid key id and a body at least nonce + tag long."""
    if not KEY_ID_PATTERN.fullmatch(kid):
        return False
    try:
        return len(b64url_decode(body)) >= 28
    except DecryptionError:
        return False
