"""This replica's match index in memory, kept in step with the vault across replicas and
restarts.

Every transaction that changes the vault — a linking batch, an opt-out, an operator's split,
merge, decision or resolution — first calls `hold(ctx, tx)`. On PostgreSQL that takes the
vault's transaction-level advisory lock (`pg_advisory_xact_lock`, held to commit or rollback); on
SQLite (one process) bumping the state row takes the database's write lock, which serializes
the process's own transactions the same way. Holding it, the replica applies to its index every
change committed since it last looked, then works:

- the change feed (`linkage_vault_changes`) gets a row per identity put into the vault (a new
  record, a replaced identity) or deleted, in the writer's transaction. Its sequence is drawn
  under the lock, so what is committed is always a prefix of it, and "after the last sequence I
  applied" misses nothing. Person merges and splits need no row: the index holds no persons
  (a decision reads the few candidates at or above the possible band from the database, which
  under the lock is current);
- a transaction's own changes reach memory only once they are seen committed: the batch's
  records are staged in the index for scoring (`VaultIndex.stage`), and the next `hold` (this
  process's next vault transaction, or the keep-up loop within seconds) settles them if the
  feed holds rows of that transaction, else forgets them. A rolled-back batch leaves nothing.
- deletions (opt-out purges) are removed from memory with their vocabulary values.

At start the `index-load` task reads the vault (without the lock: it notes the feed's position
first and every change after it is applied at the first `hold`); vault transactions wait for
it. After that the same task keeps the index up to date while the replica is idle.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from kiban_common.crypto import FieldCipher
from kiban_common.outbox import Transaction
from kiban_linkage.domain.index import VaultIndex
from kiban_linkage.domain.matching import Normalized, identity_from_mapping, normalize
from kiban_linkage.store import vault

if TYPE_CHECKING:
    from kiban_linkage.context import Linkage

log = logging.getLogger("kiban.linkage")

_HELD = "kiban_linkage.vault"
VAULT_IDENTITY = "kiban.linkage.vault/identity"  # = context.VAULT_IDENTITY
_KEEP_UP_SECONDS = 2.0  # an idle replica applies others' changes (and purges) this often
_IN_THREAD = 256  # identities to open beyond which the work goes to a worker thread


@dataclass
class VaultSession:
    """What one transaction holding the vault changed, for the index once it committed."""

    writer: str = field(default_factory=lambda: secrets.token_hex(16))
    # (record id, staged position: its new identity | None: deleted), in order
    changes: list[tuple[int, int | None]] = field(default_factory=list)
    keys: dict[int, list[int]] = field(default_factory=dict)  # staged position → key hashes
    # record id → its staged position in this transaction (None: deleted by it)
    position: dict[int, int | None] = field(default_factory=dict)
    _added: dict[int, list[int]] | None = None

    @property
    def added(self) -> dict[int, list[int]]:
        """Key hash → record ids this transaction put (built when a second batch in the same
        transaction asks: most transactions link one batch)."""
        if self._added is None:
            added: dict[int, list[int]] = {}
            for record_id, position in self.changes:
                if position is None or self.position.get(record_id) != position:
                    continue
                for h in self.keys[position]:
                    added.setdefault(h, []).append(record_id)
            self._added = added
        return self._added

    async def put(
        self,
        conn: AsyncConnection,
        kinds: Sequence[str],
        puts: Sequence[tuple[int, int, list[int]]],
    ) -> None:
        """Identities put into the vault: (record id, staged position, key hashes) each,
        `kinds` "add" or "replace"."""
        await vault.add_changes(conn, self.writer, kinds, [r for r, _, _ in puts])
        for record_id, position, keys in puts:
            self.changes.append((record_id, position))
            self.keys[position] = keys
            self.position[record_id] = position
        self._added = None

    async def deleted(self, conn: AsyncConnection, record_ids: Sequence[int]) -> None:
        await vault.add_changes(conn, self.writer, ["delete"] * len(record_ids), record_ids)
        for record_id in record_ids:
            self.changes.append((record_id, None))
            self.position[record_id] = None
        self._added = None


class Replica:
    """The index and how far into the change feed it is."""

    def __init__(self) -> None:
        self.index = VaultIndex()
        self.seq = 0  # the last change applied
        self.loaded = asyncio.Event()
        self.pending: VaultSession | None = None  # the last holder's changes, unconfirmed
        self.checked = 0.0  # monotonic time of the last catch-up

    def status(self) -> dict[str, int]:
        return {"records": len(self.index), "positions": self.index.positions, "seq": self.seq}


async def hold(ctx: Linkage, tx: Transaction) -> VaultSession:
    """Take the vault lock for `tx` and bring the index up to date (once per transaction)."""
    session: VaultSession | None = tx.state.get(_HELD)
    if session is not None:
        return session
    replica = ctx.replica
    await replica.loaded.wait()
    conn = await tx.session.connection()
    await vault.lock_vault(conn)
    await catch_up(ctx, conn)
    session = tx.state[_HELD] = VaultSession()
    replica.pending = session
    return session


async def catch_up(ctx: Linkage, conn: AsyncConnection) -> None:
    """Settle or forget the previous holder's staged changes, then apply every change
    committed since. The caller holds the vault lock."""
    replica = ctx.replica
    index = replica.index
    pending, replica.pending = replica.pending, None
    replica.checked = time.monotonic()
    horizon = await vault.change_horizon(conn)
    if replica.seq < horizon:  # the feed was pruned past us: read the vault anew
        log.warning("match index behind the change feed: reloading it")
        replica.index = VaultIndex()
        replica.seq = max(await vault.last_change(conn), horizon)
        await _load_pages(
            ctx, lambda before: vault.identity_page(conn, before=before, limit=20_000)
        )
        return
    rows = await vault.changes_since(conn, replica.seq)
    ours = pending is not None and any(w == pending.writer for _, w, _, _ in rows)
    if pending is not None and ours:
        index.settle(pending.changes, pending.keys)
    else:
        index.unstage()
    foreign = [r for _, w, _, r in rows if pending is None or w != pending.writer]
    if foreign:
        await _apply(ctx, conn, foreign)
    if rows:
        replica.seq = rows[-1][0]
    retention = ctx.options.change_retention
    if replica.seq - horizon > 2 * retention:
        await vault.prune_changes(conn, replica.seq - retention)


async def _apply(ctx: Linkage, conn: AsyncConnection, record_ids: Sequence[int]) -> None:
    """Other writers' changes: each record touched ends as the vault holds it now."""
    index = ctx.replica.index
    touched = list(dict.fromkeys(record_ids))
    tokens = await vault.identities_of(conn, touched)
    for record_id in touched:
        if record_id not in tokens:
            index.remove(record_id)
    present = [(r, tokens[r]) for r in touched if r in tokens]
    if len(present) > _IN_THREAD:
        values = await asyncio.to_thread(_open_tokens, ctx.cipher, [t for _, t in present])
    else:
        values = _open_tokens(ctx.cipher, [t for _, t in present])
    index.put_many([(r, n) for (r, _), n in zip(present, values, strict=True)])
    index.purge()


def _open_tokens(cipher: FieldCipher, tokens: Sequence[str]) -> list[Normalized]:
    """CPU-bound (decrypt, normalize): a worker thread runs it for large pages."""
    return [
        normalize(identity_from_mapping(cipher.decrypt_json(t, context=VAULT_IDENTITY)))
        for t in tokens
    ]


def _load_page(ctx: Linkage, index: VaultIndex, rows: Sequence[tuple[int, str]]) -> None:
    values = _open_tokens(ctx.cipher, [t for _, t in rows])
    index.put_many([(r, n) for (r, _), n in zip(rows, values, strict=True)], bulk=True)


async def _load_pages(ctx: Linkage, page: Any) -> int:
    loaded = 0
    before: int | None = None
    index = ctx.replica.index
    while True:
        rows = await page(before)
        if not rows:
            await asyncio.to_thread(index.compact)  # the key table, sorted in one go
            return loaded
        await asyncio.to_thread(_load_page, ctx, index, rows)
        loaded += len(rows)
        before = rows[-1][0]


async def load_index(runtime: Any, *, page: int = 20_000) -> int:
    """Build the index from the vault (at start): note the change feed's position, read every
    vault record (newest first, a page per transaction), decrypt, normalize and index it in a
    worker thread; changes committed meanwhile are applied at the first `hold`. Then freeze the
    long-lived objects out of the collector (`Linkage.freeze`) and open the vault to
    transactions. Returns the records loaded."""
    ctx: Linkage = runtime.context
    replica = ctx.replica
    replica.index = VaultIndex()  # a load that failed half-way starts over
    async with runtime.transaction() as tx:
        conn = await tx.session.connection()
        await ctx.ensure_model(conn)
        start = max(await vault.last_change(conn), await vault.change_horizon(conn))

    async def read(before: int | None) -> list[tuple[int, str]]:
        if runtime.stopping.is_set():
            return []
        async with runtime.transaction() as tx:
            conn = await tx.session.connection()
            return await vault.identity_page(conn, before=before, limit=page)

    loaded = await _load_pages(ctx, read)
    if runtime.stopping.is_set():
        return loaded
    replica.seq = start
    ctx.freeze()
    replica.loaded.set()
    log.info("match index loaded: %d vault records", loaded)
    return loaded


async def keep_up(runtime: Any) -> None:
    """While the replica is idle: apply the changes others committed (their purges included)
    and settle this replica's last transaction, every few seconds. A failure (the database
    away) is retried at the next tick."""
    ctx: Linkage = runtime.context
    while not runtime.stopping.is_set():
        try:
            await _keep_up_once(runtime, ctx)
        except Exception as exc:  # only the type is logged
            log.warning("match index keep-up failed (%s)", type(exc).__name__)


async def _keep_up_once(runtime: Any, ctx: Linkage) -> None:
    replica = ctx.replica
    with suppress(TimeoutError):
        await asyncio.wait_for(runtime.stopping.wait(), timeout=_KEEP_UP_SECONDS)
    if runtime.stopping.is_set() or time.monotonic() - replica.checked < _KEEP_UP_SECONDS:
        return  # stopping, or a vault transaction caught up a moment ago
    if replica.pending is None:
        async with runtime.transaction() as tx:
            if await vault.last_change(await tx.session.connection()) <= replica.seq:
                return  # nothing new
    # the lock first (on SQLite a transaction that read before writing could be refused)
    async with runtime.transaction() as tx:
        session = await hold(ctx, tx)
        if replica.pending is session:  # it changes nothing: no need to confirm it
            replica.pending = None
