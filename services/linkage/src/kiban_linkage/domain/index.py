"""The service's match index in memory: every live vault record's blocking keys and comparison
codes, by vault record id — the engine's `MatchIndex` algorithm (`matching._index`) with
removals, and with a batch staged until its transaction is known to have committed.

Pure (no I/O). What it holds of an identity: the comparison codes of its normalized forms in
growing columns (`GrowingColumns`: one int64 code per form, strings in shared vocabularies) and
in-process hashes of its blocking keys, in a key table of sorted arrays (built in bulk) plus a
dict of the positions settled since its last rebuild. The normalized identities themselves are
not kept (at a 1,000,000-record vault they took ~1.3 GB; the columns score pairs without them).

Invariants an implementer must keep:

- Positions only grow. A record whose identity is replaced takes a new position; the old one
  dies (`live` 0), leaves the key table (the sorted part at its next rebuild) and has its codes
  wiped. A removed (purged) record's position dies the same way, the sorted key table is
  rebuilt without it at once, and every vocabulary value no live record uses any more is
  overwritten, so nothing of a purged identity stays in memory.
- Records staged for a batch (`stage`) lie after the committed positions: they can be scored
  (`probabilities`) but are nobody's candidates until `settle` commits them, which the caller
  does only once their transaction is known to have committed; `unstage` forgets them.
- Candidates are live committed positions only; a key held by more than `max_block` live
  records is left out, as the database's blind-index blocks were.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching import (
    GrowingColumns,
    MatchModel,
    Normalized,
    TermFactors,
    blocking_keys,
)

__all__ = ["VaultIndex", "key_hashes"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_TOMBSTONE = "\x00"  # a purged vocabulary value: no normalized form contains NUL


def key_hashes(normalized: Normalized) -> list[int]:
    """The in-process hashes of a record's distinct blocking keys (Python's salted `hash`:
    never stored, never the same in two processes)."""
    return list(dict.fromkeys(hash(k) for k in blocking_keys(normalized)))


class VaultIndex:
    """Vault records by position (see the module docstring for the invariants)."""

    def __init__(self) -> None:
        self._cols = GrowingColumns()
        self._tf = TermFactors()
        # Key hash → positions, in two parts: sorted arrays for the positions below `_merged`
        # (built in bulk: 16 bytes a key, where a dict took ~70) and a dict for the positions
        # settled since (→ one position or a list); rebuilt together once the dict grows.
        self._sorted_h = np.zeros(0, dtype=np.int64)
        self._sorted_p = np.zeros(0, dtype=np.int64)
        self._merged = 0
        self._keys: dict[int, int | list[int]] = {}
        self._ids: list[int] = []  # position → record id (-1: a staged record never stored)
        self._live = bytearray()  # position → 1 while it is its record's current identity
        self._where: dict[int, int] = {}  # record id → position
        self._key_start = array("q", [0])  # position → first of its key hashes in _key_hash
        self._key_hash = array("q")
        self._size = 0  # committed positions; staged ones follow
        # (position, codes) of the records removed since the last `purge`
        self._removed: list[tuple[int, dict[str, int]]] = []
        self.max_id = 0  # highest record id ever held

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, record_id: int) -> bool:
        return record_id in self._where

    @property
    def positions(self) -> int:
        """Committed positions, dead ones included (memory grows with them)."""
        return self._size

    def position(self, record_id: int) -> int | None:
        return self._where.get(record_id)

    def record_id(self, position: int) -> int:
        return self._ids[position]

    @property
    def ids(self) -> list[int]:
        """Position → record id (read only; -1: a staged record never stored)."""
        return self._ids

    def record_ids(self) -> set[int]:
        return set(self._where)

    # Committed changes ------------------------------------------------------------------------

    def put_many(self, records: Sequence[tuple[int, Normalized]], *, bulk: bool = False) -> None:
        """Committed records (the load at start, another replica's changes): each takes a new
        position; a record id already held has its identity replaced. `bulk` (the load):
        they are candidates only after `compact`."""
        if not records:
            return
        self.unstage()
        self._cols.extend([n for _, n in records])
        for record_id, normalized in records:
            position = self._append(record_id, key_hashes(normalized))
            self._settle_one(record_id, position, index_keys=not bulk)
        if not bulk and self._size - self._merged > max(100_000, self._merged // 8):
            self.compact()

    def compact(self) -> None:
        """Rebuild the sorted key table over every committed position (dead ones dropped) and
        empty the dict of recent ones."""
        starts = np.frombuffer(self._key_start, dtype=np.int64)[: self._size + 1]
        hashes = np.frombuffer(self._key_hash, dtype=np.int64)[: starts[-1]]
        owner = np.repeat(np.arange(self._size, dtype=np.int64), np.diff(starts))
        live = np.frombuffer(bytes(self._live[: self._size]), dtype=np.uint8).astype(bool)
        keep = live[owner] & (hashes != 0)
        hashes, owner = hashes[keep], owner[keep]
        order = np.argsort(hashes, kind="stable")  # within a key, positions stay in order
        self._sorted_h, self._sorted_p = hashes[order], owner[order]
        self._merged = self._size
        self._keys = {}

    def remove(self, record_id: int) -> bool:
        """Purge a deleted record: its position dies and leaves the key table, its codes are
        wiped and vocabulary values no live record uses any more are overwritten."""
        position = self._where.pop(record_id, None)
        if position is None:
            return False
        self._removed.append((position, self._retire(position)))
        return True

    def purge(self) -> None:
        """Overwrite the vocabulary values that records removed since the last call used and
        that no live committed record uses (call once the changes at hand are all applied, so
        a record stored after the removal in the same batch keeps its values)."""
        removed = self._removed
        if not removed:
            return
        if any(position < self._merged for position, _ in removed):
            self.compact()  # their key hashes leave the sorted table too
        cols = self._cols
        live = np.frombuffer(bytes(self._live[: self._size]), dtype=np.uint8).astype(bool)
        by_vocab: dict[int, list[str]] = {}
        for column in cols.codes:
            by_vocab.setdefault(id(cols.vocab(column)), []).append(column)
        for columns in by_vocab.values():
            vocab = cols.vocab(columns[0])
            codes = np.asarray(
                sorted({w[c] for _, w in removed for c in columns if w.get(c, -1) >= 0}),
                dtype=np.int64,
            )
            unused = np.ones(len(codes), dtype=bool)
            for c in columns:
                if not len(codes):
                    break
                unused &= ~np.isin(codes, cols.codes[c][: self._size][live])
            for code in codes[unused].tolist():
                vocab.index.pop(vocab.values[code], None)
                vocab.values[code] = _TOMBSTONE
                vocab.array()[code] = _TOMBSTONE
        self._removed = []

    # A batch: staged, scored, then settled or forgotten ---------------------------------------

    def stage(self, records: Sequence[Normalized]) -> int:
        """Put a batch's records after the committed (and already staged) positions, for
        scoring only; returns the position of the first (the k-th record is at that + k)."""
        first = self._cols.n
        self._cols.extend(records)
        return first

    def unstage(self) -> None:
        self._cols.truncate(self._size)

    def settle(self, changes: Iterable[tuple[int, int | None]], keys: dict[int, list[int]]) -> None:
        """The staged batch committed. `changes`, in the order they were made: (record id,
        staged position) — the record now has that identity (`keys[position]` its key
        hashes) — or (record id, None) — the record was deleted. Staged positions that no
        change names (records not stored) stay dead."""
        staged = self._cols.n - self._size
        first = self._size
        for k in range(staged):
            self._append(-1, keys.get(first + k, ()), live=False)
        for record_id, position in changes:
            if position is None:
                self.remove(record_id)
                continue
            self._ids[position] = record_id
            self._live[position] = 1
            self._settle_one(record_id, position)
        self.purge()
        if self._size - self._merged > max(100_000, self._merged // 8):
            self.compact()

    # Candidates and scores --------------------------------------------------------------------

    def candidates(
        self, keys: Iterable[int], *, max_block: int, limit: int
    ) -> list[tuple[int, int]]:
        """(position, keys shared) of the live committed records sharing one of `keys`; more
        than `limit` are cut to those sharing the most (ties: the highest record id). The
        order is not a ranking."""
        table, live = self._keys, self._live
        keys = list(keys)
        found: list[int] = []
        sorted_h = self._sorted_h
        if len(sorted_h) and keys:
            query = np.asarray(keys, dtype=np.int64)
            los = np.searchsorted(sorted_h, query, side="left").tolist()
            his = np.searchsorted(sorted_h, query, side="right").tolist()
        else:
            los = his = [0] * len(keys)
        sorted_p = self._sorted_p
        for h, lo, hi in zip(keys, los, his, strict=True):
            got = table.get(h)
            block: list[int] = sorted_p[lo:hi].tolist() if hi > lo else []
            if got is not None:
                if isinstance(got, int):
                    block.append(got)
                else:
                    block.extend(got)
            if len(block) <= max_block or self._live_count(block, max_block) <= max_block:
                found.extend(block)
        shared = [(p, c) for p, c in Counter(found).items() if live[p]]
        if len(shared) <= limit:
            return shared
        ids = self._ids
        shared.sort(key=lambda pc: (-pc[1], -ids[pc[0]]))
        return shared[:limit]

    def probabilities(self, model: MatchModel, ia: IntArray, ib: IntArray) -> FloatArray:
        """Probabilities of the pairs of positions (ia[k], ib[k]); ia is the record matched."""
        return self._tf.probabilities(model, self._cols, ia, ib)

    def rows(self) -> dict[int, tuple[object, ...]]:
        """Record id → the values its columns hold (decoded; for comparing two indexes)."""
        cols = self._cols
        out: dict[int, tuple[object, ...]] = {}
        for record_id, position in self._where.items():
            values: list[object] = [int(cols.dates[position])]
            for column, codes in sorted(cols.codes.items()):
                code = int(codes[position])
                values.append(cols.vocab(column).values[code] if code >= 0 else None)
            keys = self._key_hash[self._key_start[position] : self._key_start[position + 1]]
            values.append(tuple(sorted(keys)))
            out[record_id] = tuple(values)
        return out

    # Internals --------------------------------------------------------------------------------

    def _append(self, record_id: int, hashes: Iterable[int], *, live: bool = True) -> int:
        position = self._size
        self._size += 1
        self._ids.append(record_id)
        self._live.append(1 if live else 0)
        self._key_hash.extend(hashes)
        self._key_start.append(len(self._key_hash))
        return position

    def _settle_one(self, record_id: int, position: int, *, index_keys: bool = True) -> None:
        old = self._where.get(record_id)
        if old is not None and old != position:
            self._retire(old)
        self._where[record_id] = position
        self.max_id = max(self.max_id, record_id)
        if not index_keys:
            return
        table = self._keys
        for h in self._key_hash[self._key_start[position] : self._key_start[position + 1]]:
            got = table.get(h)
            if got is None:
                table[h] = position
            elif isinstance(got, int):
                if got != position:
                    table[h] = [got, position]
            elif position not in got:
                got.append(position)

    def _retire(self, position: int) -> dict[str, int]:
        """The position dies: out of the key table, its codes wiped (-1 = missing); returns
        the codes it had."""
        self._live[position] = 0
        table = self._keys
        start, end = self._key_start[position], self._key_start[position + 1]
        for h in self._key_hash[start:end]:
            got = table.get(h)
            if got is None:
                continue
            if isinstance(got, int):
                if got == position:
                    del table[h]
            elif position in got:
                got.remove(position)
                if len(got) == 1:
                    table[h] = got[0]
                elif not got:
                    del table[h]
        for k in range(start, end):
            self._key_hash[k] = 0
        had = {column: int(codes[position]) for column, codes in self._cols.codes.items()}
        for codes in self._cols.codes.values():
            codes[position] = -1
        self._cols.dates[position] = -1
        return had

    def _live_count(self, positions: list[int], max_block: int) -> int:
        # A block over `max_block` positions may hold dead ones; one over four times that is
        # oversized whatever it holds (counting it would cost more than it could bring).
        if len(positions) > 4 * max_block:
            return len(positions)
        live = self._live
        return sum(live[p] for p in positions)
