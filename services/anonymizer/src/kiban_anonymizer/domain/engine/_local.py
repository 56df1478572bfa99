"""Local recoding: top-down specialization over the hierarchies (Mondrian with hierarchical
cuts), vectorized over all partitions at once.

Every partition is a box: one hierarchy node per quasi-identifier, and every record in it is
published with those nodes' labels. It starts as one partition at the `*` nodes. In each round,
every open partition tries, for each attribute, to replace its node by the node's children:

- a child holding at least k records (and at least l distinct sensitive values) becomes a new
  partition one level lower on that attribute;
- the other children stay together as the "rest", still at the parent node; the rest must itself
  hold k records and l values, or be empty. When the rest is short of k by x records, x records of
  the largest qualifying child join it if that child keeps k records (with l-diversity, only
  records of that child's most frequent sensitive value, and only if some of it stays);
  otherwise the smallest qualifying child joins the rest whole;
- the cut is valid when at least one child leaves.

Each partition takes the valid cut with the best score: the certainty penalty it removes
(records that move x the NCP they shed) divided by the square root of the number of children that
leave, so that cuts which shed much without fragmenting the partition go first. A partition
with no valid cut is final. After every round each box shrinks, on every attribute, to the lowest
node its records share. Every partition is k-anonymous and
distinct-l-diverse by construction and no record is ever suppressed.

The work runs on distinct tuples with weights; a tuple whose records are split between a child
and the rest becomes two pieces (`origin` says which tuple a piece came from).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kiban_anonymizer.domain.engine._hierarchy import BoolArray, FloatArray, IntArray
from kiban_anonymizer.domain.engine._table import Table, group

_MAX_ROUNDS = 10_000


@dataclass
class Pieces:
    nodes: IntArray  # (pieces, qi) output node per piece
    origin: IntArray  # tuple each piece came from
    weight: IntArray  # records per piece


@dataclass
class _Cut:
    g: IntArray  # group (partition x child) of each active tuple
    leaving: BoolArray  # per group: leaves the partition
    donor: IntArray  # per partition: group giving records to the rest, or -1
    short: IntArray  # per partition: records the donor gives
    donor_value: IntArray  # per partition: sensitive value the donor gives, or -1 for any


def local_recoding(table: Table, k: int, l_div: int | None) -> Pieces:
    attrs = table.attributes
    q = len(attrs)
    leafs = table.leaf
    weight = table.weight.copy()
    origin = np.arange(len(weight), dtype=np.int64)
    part = np.zeros(len(weight), dtype=np.int64)
    levels = np.array([[a.height - 1 for a in attrs]], dtype=np.int64)  # (partitions, q)
    open_ = np.ones(1, dtype=bool)
    need_l = l_div is not None and l_div > 1 and table.sensitive is not None
    ns = max(table.sensitive_values, 1)
    sens_all = (
        table.sensitive if table.sensitive is not None else np.zeros(len(weight), dtype=np.int64)
    )
    lmin = l_div if need_l and l_div is not None else 1

    for _ in range(_MAX_ROUNDS):
        act = np.flatnonzero(open_[part])
        if len(act) == 0:
            break
        pa, npart = group(part[act])  # compact ids of the open partitions
        pid = np.empty(npart, dtype=np.int64)
        pid[pa] = part[act]
        w = weight[act].astype(np.float64)
        s = sens_all[origin[act]]
        best_gain = np.full(npart, -1.0)
        best_attr = np.full(npart, -1, dtype=np.int64)
        cuts: list[_Cut] = []
        for ai, attr in enumerate(attrs):
            lv = levels[pid[pa], ai]
            leaf = leafs[origin[act], ai]
            cur = attr.node[lv, leaf]
            child = attr.node[np.maximum(lv - 1, 0), leaf]
            g, ng = group(pa * attr.nodes + child)
            cnt = np.bincount(g, weights=w, minlength=ng)
            gpart = np.empty(ng, dtype=np.int64)
            gpart[g] = pa
            gshed = np.zeros(ng)
            gshed[g] = attr.ncp[cur] - attr.ncp[child]
            big = cnt >= k
            maj_value = np.full(ng, -1, dtype=np.int64)
            maj_count = cnt.copy()
            if need_l:
                pairs, npairs = group(g * ns + s)
                pair_g = np.empty(npairs, dtype=np.int64)
                pair_g[pairs] = g
                pair_s = np.empty(npairs, dtype=np.int64)
                pair_s[pairs] = s
                pair_n = np.bincount(pairs, weights=w, minlength=npairs)
                big &= np.bincount(pair_g, minlength=ng) >= lmin
                order = np.lexsort((-pair_n, pair_g))
                head = order[np.searchsorted(pair_g[order], np.arange(ng))]
                maj_value = pair_s[head]
                maj_count = pair_n[head]
            small = ~big
            rest = np.bincount(gpart, weights=np.where(big, 0.0, cnt), minlength=npart)
            nbig = np.bincount(gpart, weights=big.astype(np.float64), minlength=npart)
            rest_diverse = np.ones(npart, dtype=bool)
            if need_l:
                rest_diverse = _distinct(pa, s, small[g], npart, ns) >= lmin
            fine = (rest == 0) | ((rest >= k) & rest_diverse)
            # partial top-up from the largest qualifying child
            largest = _extreme(gpart, np.where(big, -cnt, np.inf), npart)
            short = np.where(fine, 0, np.maximum(k - rest, 0)).astype(np.int64)
            partial = (
                ~fine
                & (rest > 0)
                & rest_diverse
                & (nbig >= 1)
                & (cnt[largest] - short >= k)
                & ((maj_count[largest] > short) if need_l else True)
            )
            # otherwise the smallest qualifying child joins the rest whole
            smallest = _extreme(gpart, np.where(big, cnt, np.inf), npart)
            demote = ~fine & ~partial & (nbig >= 1)
            if demote.any():
                joined = rest + np.where(demote, cnt[smallest], 0.0)
                ok = joined >= k
                if need_l:
                    member = small[g] | (g == np.where(demote, smallest, -1)[pa])
                    ok &= _distinct(pa, s, member, npart, ns) >= lmin
                demote &= ok
            valid = (fine & (nbig >= 1)) | partial | demote
            valid &= levels[pid, ai] > 0
            valid &= ~(demote & (nbig <= 1))
            leaving = big.copy()
            leaving[smallest[demote]] = False
            gain = np.bincount(gpart, weights=np.where(leaving, cnt * gshed, 0.0), minlength=npart)
            gain -= np.where(partial, short * gshed[largest], 0.0)
            # prefer cuts that shed much without fragmenting the partition into many children
            nleave = np.bincount(gpart, weights=leaving.astype(np.float64), minlength=npart)
            gain = gain / np.sqrt(np.maximum(nleave, 1))
            better = valid & (gain > best_gain)
            best_gain = np.where(better, gain, best_gain)
            best_attr = np.where(better, ai, best_attr)
            cuts.append(
                _Cut(
                    g,
                    leaving,
                    np.where(partial, largest, -1),
                    np.where(partial, short, 0),
                    np.where(partial, maj_value[largest] if need_l else -1, -1),
                )
            )
        done = best_attr < 0
        open_[pid[done]] = False
        if done.all():
            break
        # apply the chosen cut of each partition
        chosen = best_attr[pa]
        new_part = part[act].copy()
        next_id = len(levels)
        new_levels = [levels]
        copies: list[tuple[IntArray, IntArray, IntArray]] = []  # (tuple index, weight, part)
        for ai in range(q):
            cut = cuts[ai]
            mine = chosen == ai
            sel = mine & cut.leaving[cut.g]
            if not sel.any():
                continue
            # records the donor gives to the rest: smallest tuples first, the last one split
            donor_rows = np.flatnonzero(
                mine
                & (cut.donor[pa] == cut.g)
                & ((cut.donor_value[pa] < 0) | (s == cut.donor_value[pa]))
            )
            if len(donor_rows):
                order = donor_rows[np.lexsort((w[donor_rows], cut.g[donor_rows]))]
                dg = cut.g[order]
                cum = np.cumsum(w[order])
                starts = np.searchsorted(dg, dg)  # first row of each donor group
                before = cum - w[order] - (cum[starts] - w[order][starts])
                give = np.clip(cut.short[pa[order]] - before, 0, w[order]).astype(np.int64)
                whole = give == w[order]
                sel[order[whole]] = False
                part_split = order[(give > 0) & ~whole]
                if len(part_split):
                    moved = give[(give > 0) & ~whole]
                    rows = act[part_split]
                    copies.append((rows, moved, part[rows]))
                    weight[rows] -= moved
            gid, count = group(cut.g[sel])
            new_part[sel] = next_id + gid
            src = np.empty(count, dtype=np.int64)
            src[gid] = part[act][sel]
            rows_levels = levels[src].copy()
            rows_levels[:, ai] -= 1
            new_levels.append(rows_levels)
            next_id += count
        levels = np.concatenate(new_levels)
        open_ = np.concatenate([open_, np.ones(next_id - len(open_), dtype=bool)])
        part[act] = new_part
        for rows, moved, stay in copies:
            origin = np.concatenate([origin, origin[rows]])
            weight = np.concatenate([weight, moved])
            part = np.concatenate([part, stay])
        _tighten(table, origin, part, levels, np.flatnonzero(open_[part]))
    _tighten(table, origin, part, levels, np.arange(len(part)))
    nodes = np.empty((len(part), q), dtype=np.int64)
    for ai, attr in enumerate(attrs):
        nodes[:, ai] = attr.node[levels[part, ai], leafs[origin, ai]]
    return Pieces(nodes, origin, weight)


def _extreme(gpart: IntArray, value: FloatArray, npart: int) -> IntArray:
    """Per partition, the group with the smallest `value` (groups listed by partition)."""
    ng = len(gpart)
    order = np.lexsort((value, gpart))
    starts = np.searchsorted(gpart[order], np.arange(npart))
    picked: IntArray = order[np.minimum(starts, ng - 1)]
    return picked


def _tighten(
    table: Table, origin: IntArray, part: IntArray, levels: IntArray, rows: IntArray
) -> None:
    """Lower each partition's level on every attribute to the lowest level at which all its
    records still share one node (the box shrinks to what its records need)."""
    if len(rows) == 0:
        return
    p = part[rows]
    npart = len(levels)
    # a representative record per partition; all records share a node with it at a level
    # iff none differs there (compare + count, no hashing)
    first = np.full(npart, -1, dtype=np.int64)
    first[p[::-1]] = rows[::-1]
    present = first >= 0
    rep = first[p]
    for ai, attr in enumerate(table.attributes):
        leaf = table.leaf[origin[rows], ai]
        rep_leaf = table.leaf[origin[rep], ai]
        lowest = levels[:, ai].copy()
        for lv in range(int(lowest[present].max(initial=0)) - 1, -1, -1):
            differ = attr.node[lv, leaf] != attr.node[lv, rep_leaf]
            uniform = np.bincount(p, weights=differ, minlength=npart) == 0
            lowest[uniform & present & (lowest == lv + 1)] = lv
        levels[:, ai] = lowest


def _distinct(pa: IntArray, s: IntArray, mask: BoolArray, npart: int, ns: int) -> IntArray:
    """Distinct sensitive values among the masked tuples of each partition."""
    if not mask.any():
        return np.zeros(npart, dtype=np.int64)
    keys = pd.unique(pa[mask] * ns + s[mask])
    return np.bincount(keys // ns, minlength=npart).astype(np.int64)
