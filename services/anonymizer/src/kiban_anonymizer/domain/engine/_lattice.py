"""Optimal full-domain generalization: a best-first search of the generalization lattice.

A lattice node is one level per quasi-identifier; every record is generalized to those levels
and the records of classes still smaller than k (or with fewer than l distinct sensitive values)
are suppressed, which is allowed while they are at most `suppression_limit` of the records.

Search (optimal for GCP, in the spirit of ARX's Flash with its information-loss bounds): the
generalization part of GCP is separable, `LB(node) = mean_a mean_r NCP_a(r, level_a)`, grows
monotonically up the lattice and never exceeds the node's true GCP (suppressed records cost 1,
the most a generalized value can). Nodes are expanded from the bottom in order of LB with a heap;
the first node whose LB reaches the best GCP found ends the search, so the result is the
minimum-GCP node. Monotonicity prunes the expansion: a node that is k-anonymous (and l-diverse)
without suppressing anything passes that on to every generalization of it, whose GCP is then
its lower bound, never below the node's own; so its generalizations are not expanded from it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from kiban_anonymizer.domain.engine._hierarchy import BoolArray, IntArray
from kiban_anonymizer.domain.engine._table import Table, combine, group


@dataclass
class LatticeResult:
    levels: tuple[int, ...]
    nodes: IntArray  # (tuples, qi) output node per tuple
    suppressed: BoolArray  # (tuples,) bool
    gcp: float
    evaluated: int


def full_domain(
    table: Table,
    k: int,
    l_div: int | None,
    suppression_limit: float,
    bound: float = np.inf,
) -> LatticeResult | None:
    """The minimum-GCP full-domain transformation, or None when no node qualifies with a
    GCP below `bound`."""
    attrs = table.attributes
    q = len(attrs)
    n = table.records
    budget = suppression_limit * n
    per_level = [a.level_ncp(table.leaf[:, i], table.weight) for i, a in enumerate(attrs)]
    heights = tuple(a.height for a in attrs)
    top = tuple(h - 1 for h in heights)

    def lower_bound(node: tuple[int, ...]) -> float:
        return float(sum(per_level[i][lv] for i, lv in enumerate(node))) / q

    start = (0,) * q
    heap: list[tuple[float, tuple[int, ...]]] = [(lower_bound(start), start)]
    seen = {start}
    best: LatticeResult | None = None
    best_gcp = bound
    evaluated = 0
    while heap:
        lb, node = heapq.heappop(heap)
        if lb >= best_gcp:
            break
        evaluated += 1
        outcome = _evaluate(table, node, k, l_div, budget, node == top)
        if outcome is not None:
            nodes, suppressed, gcp = outcome
            if gcp < best_gcp:
                best_gcp = gcp
                best = LatticeResult(node, nodes, suppressed, gcp, evaluated)
            if not suppressed.any():
                continue  # monotone: every generalization is anonymous and costs more
        for i in range(q):
            if node[i] + 1 < heights[i]:
                up = (*node[:i], node[i] + 1, *node[i + 1 :])
                if up not in seen:
                    seen.add(up)
                    heapq.heappush(heap, (lower_bound(up), up))
    if best is not None:
        best.evaluated = evaluated
    return best


def _evaluate(
    table: Table,
    node: tuple[int, ...],
    k: int,
    l_div: int | None,
    budget: float,
    is_top: bool,
) -> tuple[IntArray, BoolArray, float] | None:
    attrs = table.attributes
    q = len(attrs)
    n = table.records
    w = table.weight
    cols = [a.node[node[i], table.leaf[:, i]] for i, a in enumerate(attrs)]
    cls, ncls = combine(cols, [a.nodes for a in attrs])
    size = np.bincount(cls, weights=w, minlength=ncls)
    fail = size < k
    need_l = l_div is not None and l_div > 1 and table.sensitive is not None
    if need_l:
        assert table.sensitive is not None
        assert l_div is not None
        distinct = _distinct_per_class(cls, table.sensitive, table.sensitive_values, ncls)
        fail |= distinct < l_div
    suppressed = fail[cls]
    s = float(w[suppressed].sum())
    if s > budget:
        return None
    if s > 0 and not is_top:
        # the suppressed records form one class of their own (all `*`): it must qualify too
        if s < k:
            return None
        if need_l:
            assert table.sensitive is not None
            assert l_div is not None
            if len(np.unique(table.sensitive[suppressed])) < l_div:
                return None
    out = np.stack(cols, axis=1)
    kept = ~suppressed
    cost = sum(float((a.ncp[c][kept] * w[kept]).sum()) for a, c in zip(attrs, cols, strict=True))
    gcp = (cost + s * q) / (n * q)
    return out, suppressed, gcp


def _distinct_per_class(cls: IntArray, sens: IntArray, ns: int, ncls: int) -> IntArray:
    pairs, npairs = group(cls * max(ns, 1) + sens)
    owner = np.empty(npairs, dtype=np.int64)
    owner[pairs] = cls
    return np.bincount(owner, minlength=ncls).astype(np.int64)


def lattice_size(table: Table) -> int:
    return int(np.prod([a.height for a in table.attributes], dtype=np.float64))
