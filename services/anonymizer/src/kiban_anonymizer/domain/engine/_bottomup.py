"""Local recoding, bottom-up: cheapest generalization first.

The generalization lattice (one level per quasi-identifier) is walked from the cheapest level
vector to the most expensive one, ordered by an estimate of what publishing a record at those
levels costs: Σ c + max c, where c = the mean NCP of an attribute at its level over all records
(the max term makes one very coarse attribute dearer than several slightly coarser ones). At
each level vector the records not yet placed are grouped by their nodes there ("boxes"); every
box holding at least k of them (and at least l distinct sensitive values) becomes an equivalence
class, and those records are placed. Each record thus lands in the first - cheapest - box where
it finds k - 1 companions still free. The all-`*` vector comes last, so what remains forms one
class there when it is large enough; otherwise each leftover record joins the class whose loss
grows least by taking it (k and l only grow). Every class is published at the lowest nodes its
records share (which may be lower than the box that formed it). Nothing is suppressed.

Like ARX's local recoding (optimal full-domain generalization applied again to the records it
suppressed), but over every level vector in cost order rather than one optimum per pass.

Consecutive level vectors are grouped in batches: one grouping serves the whole batch, tuples
placed at one vector being subtracted from their boxes at the later ones (`_Stats`), which
gives exactly the result of grouping one vector at a time. A level vector with few possible
boxes is grouped by a dense key (`bincount`), others by hashing. With l-diversity, once few
free tuples hold another sensitive value than the most frequent one, only the tuples that can
share a box with one of them are grouped (`_may_be_diverse`). The lattice must stay small
(`MAX_LATTICE` level vectors); for larger ones `bottom_up` returns None and the caller keeps the
top-down result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kiban_anonymizer.domain.engine._hierarchy import BoolArray, FloatArray, IntArray
from kiban_anonymizer.domain.engine._table import Attribute, Table, combine

MAX_LATTICE = 50_000
_BATCH_KEYS = 1 << 16  # keys grouped at once when level vectors are tested in batches
_LIMIT = 1 << 62
_ATTACH_CHUNK = 128


def bottom_up(table: Table, k: int, l_div: int | None) -> IntArray | None:
    """Output nodes (tuples, qi) per distinct tuple of `table`, or None when the lattice is
    too large for this method or no class can be formed."""
    attrs = table.attributes
    q = len(attrs)
    if q == 0:
        return None
    lattice = _ordered_lattice(table)
    if lattice is None:
        return None
    need_l = l_div is not None and l_div > 1 and table.sensitive is not None
    lmin = int(l_div) if need_l and l_div is not None else 1
    sens = table.sensitive if need_l else None
    leaf = table.leaf
    w = table.weight
    n = len(w)
    # node ids per level: global ones radix-scaled so that their sum is one int64 key (a hash
    # groups them), and level-local ones for a dense key when a level vector has few boxes
    radix = [1]
    for a in attrs[:-1]:
        radix.append(radix[-1] * a.nodes)
    span = radix[-1] * attrs[-1].nodes
    fits = span * 256 < _LIMIT  # a batch of keys fits one int64
    scaled = [
        [a.node[lv] * (radix[i] if fits else 1) for lv in range(a.height)]
        for i, a in enumerate(attrs)
    ]
    local = [a.hierarchy.node_of_leaf for a in attrs]
    width = [[len(labels) for labels in a.hierarchy.labels] for a in attrs]
    boxes_at = [math.prod(width[i][lv] for i, lv in enumerate(levels)) for levels in lattice]
    cls = np.full(n, -1, dtype=np.int64)
    ncls = 0
    free = np.arange(n, dtype=np.int64)
    j = 0
    while len(free) and j < len(lattice):
        fs = None if sens is None else sens[free]
        if fs is not None and np.count_nonzero(np.bincount(fs)) < lmin:
            break  # no box can be l-diverse any more
        batch = min(256, max(1, _BATCH_KEYS // len(free))) if (fits and lmin <= 2) else 1
        levels = lattice[j : j + batch]
        batch = len(levels)
        j += batch
        work = free
        if fs is not None:
            # once few tuples hold other values than the most frequent one, group only the
            # tuples that could share a box with one of them
            values = np.bincount(fs)
            if len(free) - int(values.max()) < len(free) // 4:
                work = free[_may_be_diverse(local, leaf, free, fs, levels)]
        m = len(work)
        if m == 0:
            continue
        sub = [leaf[work, i] for i in range(q)]
        dense = sum(boxes_at[j - batch : j])
        if dense <= max(4 * m * batch, 1 << 12):
            keys = []
            offset = 0
            for lv in levels:
                key = local[0][lv[0]][sub[0]]
                step = width[0][lv[0]]
                for i in range(1, q):
                    key = key + local[i][lv[i]][sub[i]] * step
                    step *= width[i][lv[i]]
                keys.append(key + offset)
                offset += step
            g = np.concatenate(keys) if batch > 1 else keys[0]
            ng = offset
        elif fits:
            keys = []
            for b, lv in enumerate(levels):
                key = scaled[0][lv[0]][sub[0]] + b * span
                for i in range(1, q):
                    key = key + scaled[i][lv[i]][sub[i]]
                keys.append(key)
            g, ng = _factorize(np.concatenate(keys) if batch > 1 else keys[0])
        else:
            g, ng = combine(
                [scaled[i][levels[0][i]][sub[i]] for i in range(q)], [a.nodes for a in attrs]
            )
        ws = None if sens is None else sens[work]
        stats = _Stats(g, ng, w[work].astype(np.float64), ws, batch, lmin, k)
        grid = g.reshape(batch, m)
        alive = np.ones(m, dtype=bool)
        b = stats.next_level(0)
        while b >= 0:
            # place the tuples of the qualifying boxes at level vector b
            row = grid[b]
            ok = alive & stats.big[row]
            ids, count = pd.factorize(row[ok])
            placed = np.flatnonzero(ok)
            cls[work[placed]] = ncls + np.asarray(ids, dtype=np.int64)
            ncls += len(count)
            alive[placed] = False
            stats.remove(grid[b:, placed], placed)
            b = stats.next_level(b + 1)
        free = free[cls[free] < 0]
    if ncls == 0:
        return None
    if len(free):
        _attach(attrs, leaf, w, cls, ncls, free)
    return boxes(attrs, leaf, cls, ncls)


def _may_be_diverse(
    local: list[list[IntArray]],
    leaf: IntArray,
    free: IntArray,
    fs: IntArray,
    lattice: list[tuple[int, ...]],
) -> BoolArray:
    """Free tuples that can be in an l-diverse box (l >= 2) at some vector of `lattice`: such a
    box holds a tuple whose sensitive value is not the most frequent one, so every tuple in it
    shares its node with that tuple on every attribute, at the vector's levels and so at the
    batch's highest level per attribute. An exact filter: a tuple left out is only in boxes
    that cannot qualify, so leaving it out of the grouping changes nothing."""
    common = int(np.argmax(np.bincount(fs)))
    rare = free[fs != common]
    keep: BoolArray = fs != common
    passing = np.ones(len(free), dtype=bool)
    for i, lv in enumerate(np.max(np.array(lattice), axis=0).tolist()):
        nodes = local[i][lv]
        held = np.zeros(int(nodes.max()) + 1, dtype=bool)
        held[nodes[leaf[rare, i]]] = True
        passing &= held[nodes[leaf[free, i]]]
    keep |= passing
    return keep


class _Stats:
    """Per box of a batch of level vectors (`g`: box of every free tuple at each vector, vector
    by vector): free records, and for l-diversity the sensitive values' count, sum and sum of
    squares (l = 2: two distinct values iff n·Σs² > (Σs)²) or distinct count (l > 2, one
    vector per batch). Tuples placed at one vector are removed from the boxes of the later
    ones, so one grouping serves every vector of the batch exactly as if each were grouped
    after the previous placements."""

    def __init__(
        self,
        g: IntArray,
        ng: int,
        weight: FloatArray,
        sens: IntArray | None,
        batch: int,
        lmin: int,
        k: int,
    ) -> None:
        self.k = k
        self.lmin = lmin
        self.m = len(weight)
        self.weight = weight
        self.records = np.bincount(g, weights=np.tile(weight, batch), minlength=ng)
        self.level = np.full(ng, batch, dtype=np.int64)
        self.level[g] = np.repeat(np.arange(batch, dtype=np.int64), self.m)
        self.batch = batch
        self.moments: tuple[FloatArray, FloatArray, FloatArray] | None = None
        self.sens = sens
        self.big: BoolArray = self.records >= k
        if sens is not None and lmin == 2:
            s = np.tile(sens, batch).astype(np.float64)
            self.moments = (
                np.bincount(g, minlength=ng).astype(np.float64),
                np.bincount(g, weights=s, minlength=ng).astype(np.float64),
                np.bincount(g, weights=s * s, minlength=ng).astype(np.float64),
            )
            self.big &= self._diverse(np.arange(ng))
        elif sens is not None and lmin > 2:
            span = int(sens.max()) + 1
            pairs = pd.unique(g * span + np.tile(sens, batch))
            self.big &= np.bincount(pairs // span, minlength=ng) >= lmin
        self.per_level = np.bincount(self.level[self.big], minlength=batch + 1)

    def _diverse(self, boxes: IntArray) -> BoolArray:
        assert self.moments is not None
        n, total, squares = (x[boxes] for x in self.moments)
        out: BoolArray = n * squares - total * total > 0.5
        return out

    def next_level(self, start: int) -> int:
        """First level vector from `start` with a qualifying box, or -1."""
        found = np.flatnonzero(self.per_level[start : self.batch])
        return int(found[0]) + start if len(found) else -1

    def remove(self, boxes: IntArray, placed_tuples: IntArray) -> None:
        """Remove tuples placed at vector b: `boxes` = their boxes at b, b+1, ... (rows)."""
        placed = boxes[0]
        # the boxes placed at b are used up
        done = np.unique(placed)
        was = done[self.big[done]]
        np.subtract.at(self.per_level, self.level[was], 1)
        self.big[was] = False
        if len(boxes) == 1:
            return
        later = boxes[1:]
        flat = later.ravel()
        rows = len(later)
        np.subtract.at(self.records, flat, np.tile(self.weight[placed_tuples], rows))
        if self.moments is not None and self.sens is not None:
            s = np.tile(self.sens[placed_tuples], rows).astype(np.float64)
            np.subtract.at(self.moments[0], flat, 1.0)
            np.subtract.at(self.moments[1], flat, s)
            np.subtract.at(self.moments[2], flat, s * s)
        touched = np.unique(flat)
        touched = touched[self.big[touched]]
        still = self.records[touched] >= self.k
        if self.moments is not None:
            still &= self._diverse(touched)
        lost = touched[~still]
        np.subtract.at(self.per_level, self.level[lost], 1)
        self.big[lost] = False


def _ordered_lattice(table: Table) -> list[tuple[int, ...]] | None:
    """Every level vector, cheapest estimate first (ties: lower levels first, in order)."""
    attrs = table.attributes
    heights = [a.height for a in attrs]
    if math.prod(heights) > MAX_LATTICE:
        return None
    grid = np.indices(heights).reshape(len(attrs), -1).T  # (vectors, q), lexicographic
    mean = [a.level_ncp(table.leaf[:, i], table.weight) for i, a in enumerate(attrs)]
    c = np.stack([mean[i][grid[:, i]] for i in range(len(attrs))], axis=1)
    estimate = c.sum(axis=1) + c.max(axis=1)
    order = np.argsort(estimate, kind="stable")
    return [tuple(row) for row in grid[order].tolist()]


def _factorize(keys: IntArray) -> tuple[IntArray, int]:
    codes, uniques = pd.factorize(keys)
    return np.asarray(codes, dtype=np.int64), len(uniques)


def _attach(
    attrs: list[Attribute],
    leaf: IntArray,
    w: IntArray,
    cls: IntArray,
    ncls: int,
    leftover: IntArray,
) -> None:
    """Each leftover tuple joins the class whose total loss grows least (in place). Leftovers
    are placed in chunks, each against the classes as the previous chunks left them."""
    placed = np.flatnonzero(cls >= 0)
    box = boxes(attrs, leaf[placed], cls[placed], ncls)
    at = np.full(ncls, -1, dtype=np.int64)  # a row of `box` per class
    at[cls[placed][::-1]] = np.arange(len(placed))[::-1]
    node = box[at]  # (classes, q)
    size = np.bincount(cls[placed], weights=w[placed], minlength=ncls)
    joint = [_lca_table(a) for a in attrs]
    # cost[i][node, leaf]: NCP of the node once the leaf joins it
    cost = [a.ncp[joint[i]] for i, a in enumerate(attrs)]
    grown_by = [cost[i][node[:, i]] for i in range(len(attrs))]  # (classes, leaves)
    now = sum((a.ncp[node[:, i]] for i, a in enumerate(attrs)), np.zeros(ncls))
    for start in range(0, len(leftover), _ATTACH_CHUNK):
        x = leftover[start : start + _ATTACH_CHUNK]
        grown = grown_by[0][:, leaf[x, 0]]
        for i in range(1, len(attrs)):
            grown += grown_by[i][:, leaf[x, i]]
        increase = grown * (size[:, None] + w[x][None, :]) - (now * size)[:, None]
        chosen = np.argmin(increase, axis=0)
        cls[x] = chosen
        for c, row in zip(chosen.tolist(), leaf[x].tolist(), strict=True):
            for i, lf in enumerate(row):
                node[c, i] = joint[i][node[c, i], lf]
        np.add.at(size, chosen, w[x])
        changed = np.unique(chosen)
        for i in range(len(attrs)):
            grown_by[i][changed] = cost[i][node[changed, i]]
        now[changed] = sum(
            (a.ncp[node[changed, i]] for i, a in enumerate(attrs)), np.zeros(len(changed))
        )


def _lca_table(attr: Attribute) -> IntArray:
    """[node, leaf] -> the lowest node covering both."""
    leaves = attr.node.shape[1]
    rep = np.zeros(attr.nodes, dtype=np.int64)  # a leaf under each node
    for lv in range(attr.height - 1, -1, -1):
        rep[attr.node[lv]] = np.arange(leaves)
    r = np.repeat(rep, leaves)
    x = np.tile(np.arange(leaves), attr.nodes)
    level = np.maximum(np.repeat(attr.level_of, leaves), meet(attr, r, x))
    table: IntArray = attr.node[level, r].reshape(attr.nodes, leaves)
    return table


def meet(attr: Attribute, x: IntArray, y: IntArray) -> IntArray:
    """Lowest level at which leaves x and y share a node."""
    level = np.full(len(x), attr.height - 1, dtype=np.int64)
    for lv in range(attr.height - 2, -1, -1):
        level = np.where(attr.node[lv, x] == attr.node[lv, y], lv, level)
    return level


def boxes(attrs: list[Attribute], leaf: IntArray, cls: IntArray, ncls: int) -> IntArray:
    """Per row, the lowest nodes all rows of its class share."""
    rows = np.arange(len(cls), dtype=np.int64)
    first = np.full(ncls, -1, dtype=np.int64)
    first[cls[::-1]] = rows[::-1]
    out = np.empty((len(rows), len(attrs)), dtype=np.int64)
    for i, attr in enumerate(attrs):
        rep = leaf[first[cls], i]
        level = np.zeros(ncls, dtype=np.int64)
        np.maximum.at(level, cls, meet(attr, rep, leaf[:, i]))
        out[:, i] = attr.node[level[cls], rep]
    return out
