"""The encoded input the algorithms work on: distinct quasi-identifier tuples with weights.

Both algorithms treat records with equal quasi-identifiers (and equal sensitive value) the same
way, so they run on the distinct tuples (`Table.leaf`, one row per tuple) weighted by how many
records carry them (`Table.weight`); `Table.row_tuple` maps every record back to its tuple.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from kiban_anonymizer.domain.engine._hierarchy import FloatArray, Hierarchy, IntArray

_LIMIT = 1 << 62


def group(keys: IntArray) -> tuple[IntArray, int]:
    """Dense group ids (in order of first appearance) and the number of groups; hash-based,
    linear time."""
    codes, uniques = pd.factorize(keys)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def first_occurrence(ids: IntArray) -> IntArray:
    """Index of the first record of each group, for ids numbered in order of first
    appearance (as `group` numbers them)."""
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int64)
    seen = np.maximum.accumulate(ids)
    new = np.empty(len(ids), dtype=bool)
    new[0] = True
    new[1:] = ids[1:] > seen[:-1]
    return np.flatnonzero(new).astype(np.int64)


def combine(columns: list[IntArray], cardinalities: list[int]) -> tuple[IntArray, int]:
    """Group ids of the row-wise tuple of several code columns (mixed radix, re-densified
    whenever the radix product would overflow int64)."""
    if not columns:
        return np.zeros(0, dtype=np.int64), 0
    key = columns[0].astype(np.int64, copy=True)
    span = max(cardinalities[0], 1)
    for column, cardinality in zip(columns[1:], cardinalities[1:], strict=True):
        cardinality = max(cardinality, 1)
        if span * cardinality >= _LIMIT:
            key, span = group(key)
        key = key * cardinality + column
        span *= cardinality
    return group(key)


@dataclass
class Attribute:
    """One quasi-identifier with its hierarchy, in node ids global to the attribute:
    `node[level, leaf]` = global id of the leaf's node at that level."""

    name: str
    hierarchy: Hierarchy
    node: IntArray  # (height, leaves)
    ncp: FloatArray  # by global node id
    level_of: IntArray  # by global node id
    label: npt.NDArray[np.object_]  # by global node id
    top: int  # global id of the `*` node

    @classmethod
    def build(cls, name: str, hierarchy: Hierarchy) -> Attribute:
        offsets = np.cumsum([0] + [len(lab) for lab in hierarchy.labels])
        node = np.stack([m + offsets[i] for i, m in enumerate(hierarchy.node_of_leaf)]).astype(
            np.int64
        )
        ncp = np.concatenate(hierarchy.ncp).astype(np.float64)
        level_of = np.concatenate(
            [np.full(len(lab), i, dtype=np.int64) for i, lab in enumerate(hierarchy.labels)]
        )
        label = np.array([x for lab in hierarchy.labels for x in lab], dtype=object)
        return cls(name, hierarchy, node, ncp, level_of, label, int(offsets[-2]))

    @property
    def height(self) -> int:
        return self.hierarchy.height

    @property
    def nodes(self) -> int:
        return len(self.ncp)

    def level_ncp(self, leaf: IntArray, weight: IntArray) -> FloatArray:
        """Weighted mean NCP of the attribute at each level (full-domain lower bounds)."""
        total = float(weight.sum())
        return np.array(
            [
                float((self.ncp[self.node[lv, leaf]] * weight).sum()) / total
                for lv in range(self.height)
            ]
        )


@dataclass
class Table:
    attributes: list[Attribute]
    leaf: IntArray  # (tuples, qi) leaf code per distinct tuple
    weight: IntArray  # records per tuple
    sensitive: IntArray | None  # sensitive code per tuple (tuples are distinct on QI + S)
    sensitive_values: int
    row_tuple: IntArray  # tuple of each record

    @property
    def records(self) -> int:
        return int(self.weight.sum())

    @classmethod
    def encode(
        cls,
        attributes: list[Attribute],
        leaf_columns: list[IntArray],
        sensitive: IntArray | None,
        sensitive_values: int,
    ) -> Table:
        columns = list(leaf_columns)
        cards = [len(a.hierarchy) for a in attributes]
        if sensitive is not None:
            columns.append(sensitive)
            cards.append(sensitive_values)
        row_tuple, count = combine(columns, cards)
        first = first_occurrence(row_tuple)
        weight = np.bincount(row_tuple, minlength=count).astype(np.int64)
        leaf = (
            np.stack([c[first] for c in leaf_columns], axis=1)
            if leaf_columns
            else np.zeros((count, 0), dtype=np.int64)
        )
        return cls(
            attributes,
            leaf,
            weight,
            None if sensitive is None else sensitive[first],
            sensitive_values,
            row_tuple,
        )

    def subdivide(self, origin: IntArray, weight: IntArray) -> Table:
        """The same records over pieces of tuples: piece i is `weight[i]` records of tuple
        `origin[i]` (the pieces of a tuple add up to its weight)."""
        records = np.argsort(self.row_tuple, kind="stable")
        pieces = np.argsort(origin, kind="stable")
        row_piece = np.empty(len(self.row_tuple), dtype=np.int64)
        row_piece[records] = np.repeat(pieces, weight[pieces])
        return Table(
            self.attributes,
            self.leaf[origin],
            weight,
            None if self.sensitive is None else self.sensitive[origin],
            self.sensitive_values,
            row_piece,
        )
