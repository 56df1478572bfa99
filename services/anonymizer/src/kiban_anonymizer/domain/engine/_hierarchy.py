"""Generalization hierarchies: one tree of labels per quasi-identifier.

Invariants every `Hierarchy` keeps (checked on construction):

- level 0 holds the original values, each exactly once (the leaves);
- a label at level i determines its label at level i+1 (the levels form a tree), so a node is
  "a label at a level" and covers the set of leaves that carry that label there;
- the top level is a single node labelled `*` (a `*` level is appended when the given rows end
  with more than one label), so a fully generalized value and a suppressed value read the same.

Hierarchy labels are not personal data, but errors still name levels and positions only.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

TOP = "*"

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class Hierarchy:
    """Levels of generalization for one attribute; level 0 = the original value."""

    __slots__ = ("_index", "height", "labels", "leaf_count", "leaves", "ncp", "node_of_leaf")

    def __init__(self, rows: Sequence[Sequence[str]]) -> None:
        cleaned = [_trim(row) for row in rows]
        cleaned = [row for row in cleaned if row]
        if not cleaned:
            raise ValueError("a hierarchy needs at least one value")
        width = len(cleaned[0])
        for number, row in enumerate(cleaned, start=1):
            if len(row) != width:
                raise ValueError(f"hierarchy row {number} has {len(row)} levels, expected {width}")
        tops = {row[-1] for row in cleaned}
        if tops != {TOP}:
            cleaned = [[*row, TOP] for row in cleaned]
            width += 1
        leaves = [row[0] for row in cleaned]
        if len(set(leaves)) != len(leaves):
            raise ValueError("a hierarchy lists a value twice at level 0")
        self.leaves: list[str] = leaves
        self._index: dict[str, int] = {value: i for i, value in enumerate(leaves)}
        self.height: int = width
        #: labels[level][node] -> label; node_of_leaf[level][leaf] -> node
        self.labels: list[list[str]] = []
        self.node_of_leaf: list[IntArray] = []
        parent_of: dict[str, str] = {}
        for level in range(width):
            ids: dict[str, int] = {}
            mapping = np.empty(len(leaves), dtype=np.int64)
            for leaf, row in enumerate(cleaned):
                mapping[leaf] = ids.setdefault(row[level], len(ids))
                if level + 1 < width:
                    above = parent_of.setdefault(row[level], row[level + 1])
                    if above != row[level + 1]:
                        raise ValueError(
                            f"hierarchy is not a tree: a label at level {level} has two parents"
                        )
            parent_of = {}
            self.labels.append(list(ids))
            self.node_of_leaf.append(mapping)
        n = len(leaves)
        #: leaf_count[level][node]: leaves under the node; ncp[level][node] = (leaves-1)/(n-1)
        self.leaf_count: list[IntArray] = [
            np.bincount(m, minlength=len(lab)).astype(np.int64)
            for m, lab in zip(self.node_of_leaf, self.labels, strict=True)
        ]
        denominator = max(n - 1, 1)
        self.ncp: list[FloatArray] = [(c - 1) / denominator for c in self.leaf_count]

    # --- constructors ------------------------------------------------------------------

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[str]]) -> Hierarchy:
        """ARX format: one row per value, column i = the value's label at level i."""
        return cls(rows)

    @classmethod
    def from_arx_file(cls, path: str | Path, delimiter: str = ";") -> Hierarchy:
        with Path(path).open(encoding="utf-8-sig", newline="") as handle:
            return cls(list(csv.reader(handle, delimiter=delimiter)))

    @classmethod
    def from_function(
        cls, values: Iterable[str], levels: Sequence[Callable[[str], str]]
    ) -> Hierarchy:
        """Each function maps an original value to its label at level 1, 2, ... (in order)."""
        unique = list(dict.fromkeys(values))
        return cls([[value, *(level(value) for level in levels)] for value in unique])

    @classmethod
    def flat(cls, values: Iterable[str]) -> Hierarchy:
        """Value or `*`: used for a quasi-identifier given without a hierarchy."""
        return cls([[value] for value in dict.fromkeys(values)])

    # --- queries -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.leaves)

    def __contains__(self, value: object) -> bool:
        return value in self._index

    def leaf(self, value: str) -> int:
        return self._index[value]

    def generalize(self, value: str, level: int) -> str:
        """The label of `value` at `level` (0 = the value itself)."""
        return self.labels[level][int(self.node_of_leaf[level][self._index[value]])]

    def rows(self) -> list[list[str]]:
        """The hierarchy in ARX form (including the `*` top level)."""
        return [
            [
                self.labels[level][int(self.node_of_leaf[level][leaf])]
                for level in range(self.height)
            ]
            for leaf in range(len(self.leaves))
        ]

    def codes(self, values: Sequence[str], attribute: str) -> IntArray:
        """Leaf index of each value; a value missing from the hierarchy raises (naming the
        attribute only, never the value)."""
        try:
            return np.fromiter(
                map(self._index.__getitem__, values), dtype=np.int64, count=len(values)
            )
        except (KeyError, TypeError):
            raise ValueError(f"a value of {attribute!r} is not in its hierarchy") from None


def _trim(row: Sequence[str]) -> list[str]:
    cells = list(row)
    while cells and cells[-1] == "":
        cells.pop()
    return cells
