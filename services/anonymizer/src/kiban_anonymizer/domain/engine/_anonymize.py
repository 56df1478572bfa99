"""`anonymize`: k-anonymity (and distinct l-diversity) by generalization over hierarchies."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from kiban_anonymizer.domain.engine._bottomup import bottom_up
from kiban_anonymizer.domain.engine._hierarchy import TOP, BoolArray, Hierarchy, IntArray
from kiban_anonymizer.domain.engine._lattice import full_domain
from kiban_anonymizer.domain.engine._local import local_recoding
from kiban_anonymizer.domain.engine._report import PrivacyReport, measure
from kiban_anonymizer.domain.engine._table import Attribute, Table

Method = Literal["auto", "optimal", "local"]
METHODS: tuple[Method, ...] = ("auto", "optimal", "local")


class KAnonymityUnreachable(ValueError):
    """The request cannot be met within the suppression limit; nothing is returned."""


@dataclass(frozen=True)
class Result:
    columns: dict[str, list[str]]
    suppressed: list[bool]
    report: PrivacyReport
    method_used: str


@dataclass
class _Candidate:
    method: str
    table: Table
    nodes: IntArray
    suppressed: BoolArray
    gcp: float
    transformation: dict[str, int] | None
    seconds: dict[str, float]  # by algorithm
    algorithms: dict[str, float]  # GCP by algorithm tried


def anonymize(
    columns: Mapping[str, Sequence[str]],
    *,
    qi: Sequence[str],
    hierarchies: Mapping[str, Hierarchy],
    k: int,
    l: int | None = None,  # noqa: E741 - the name of the privacy model
    sensitive: str | None = None,
    suppression_limit: float = 0.02,
    method: Method = "auto",
    risk_threshold: float = 0.1,
) -> Result:
    """Generalize the quasi-identifiers `qi` of `columns` until every equivalence class holds
    at least `k` records (and at least `l` distinct values of `sensitive`).

    `method`: "optimal" = minimum-GCP full-domain generalization with suppression of at most
    `suppression_limit` of the records; "local" = local recoding (no suppression); "auto" = both,
    keeping the lower GCP. A QI without a hierarchy is kept or replaced by `*`. Raises
    `KAnonymityUnreachable` when the request cannot be met, `ValueError` on a malformed request.
    """
    _check(columns, qi, k, l, sensitive, suppression_limit, method)
    n = len(next(iter(columns.values()))) if columns else 0
    attrs = []
    leaf_columns = []
    for name in qi:
        values = columns[name]
        hierarchy = hierarchies.get(name) or Hierarchy.flat(values)
        attrs.append(Attribute.build(name, hierarchy))
        leaf_columns.append(hierarchy.codes(values, name))
    sens_codes: IntArray | None = None
    ns = 0
    if sensitive is not None:
        seen: dict[str, int] = {}
        values = columns[sensitive]
        sens_codes = np.fromiter(
            (seen.setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values)
        )
        ns = len(seen)
    if n == 0:
        raise KAnonymityUnreachable("the input has no records")
    if n < k:
        raise KAnonymityUnreachable(f"k={k} cannot be reached: the input has fewer records")
    table = Table.encode(attrs, leaf_columns, sens_codes, ns)
    need_l = l if (l is not None and sensitive is not None) else None

    candidates: list[_Candidate] = []
    if method in ("local", "auto"):
        candidates.append(_local(table, k, need_l))
    if method in ("optimal", "auto"):
        started = time.perf_counter()
        bound = min((c.gcp for c in candidates), default=np.inf)
        found = full_domain(table, k, need_l, suppression_limit, bound=bound)
        if found is not None:
            candidates.append(
                _Candidate(
                    "optimal",
                    table,
                    found.nodes,
                    found.suppressed,
                    found.gcp,
                    {a.name: lv for a, lv in zip(attrs, found.levels, strict=True)},
                    {"optimal": time.perf_counter() - started},
                    {"optimal": found.gcp},
                )
            )
    # keep the lowest loss among the candidates that really meet the request
    best: tuple[_Candidate, PrivacyReport] | None = None
    for candidate in sorted(candidates, key=lambda c: c.gcp):
        report = measure(
            candidate.table,
            candidate.nodes,
            candidate.suppressed,
            method=candidate.method,
            k=k,
            l_div=need_l,
            sensitive=sensitive,
            suppression_limit=suppression_limit,
            risk_threshold=risk_threshold,
            transformation=candidate.transformation,
            details={
                "seconds": {
                    name: round(seconds, 4)
                    for c in candidates
                    for name, seconds in c.seconds.items()
                },
                "candidates": {
                    name: round(gcp, 6) for c in candidates for name, gcp in c.algorithms.items()
                },
            },
        )
        if _meets(report, k, need_l, suppression_limit):
            best = (candidate, report)
            break
    if best is None:
        wanted = f"k={k}" + (f", l={need_l}" if need_l else "")
        raise KAnonymityUnreachable(
            f"{wanted} cannot be reached within the suppression limit {suppression_limit}"
        )
    candidate, report = best
    return Result(
        columns=_publish(columns, candidate, qi),
        suppressed=candidate.suppressed[candidate.table.row_tuple].tolist(),
        report=report,
        method_used=candidate.method,
    )


def _local(table: Table, k: int, l_div: int | None) -> _Candidate:
    """Local recoding: top-down specialization and bottom-up cheapest-first, the one that
    loses less (both never suppress)."""
    started = time.perf_counter()
    pieces = local_recoding(table, k, l_div)
    split = table.subdivide(pieces.origin, pieces.weight)
    none = np.zeros(len(pieces.weight), dtype=bool)
    best = _Candidate(
        "local", split, pieces.nodes, none, _gcp(split, pieces.nodes, none), None, {}, {}
    )
    seconds = {"local/top-down": time.perf_counter() - started}
    algorithms = {"local/top-down": best.gcp}
    started = time.perf_counter()
    nodes = bottom_up(table, k, l_div)
    if nodes is not None:
        none = np.zeros(len(table.weight), dtype=bool)
        gcp = _gcp(table, nodes, none)
        algorithms["local/bottom-up"] = gcp
        if gcp < best.gcp:
            best = _Candidate("local", table, nodes, none, gcp, None, {}, {})
    seconds["local/bottom-up"] = time.perf_counter() - started
    best.seconds = seconds
    best.algorithms = algorithms
    return best


def _gcp(table: Table, nodes: IntArray, suppressed: BoolArray) -> float:
    q = len(table.attributes)
    w = table.weight
    cost = sum(
        float((np.where(suppressed, 1.0, a.ncp[nodes[:, i]]) * w).sum())
        for i, a in enumerate(table.attributes)
    )
    return cost / (table.records * q) if q else 0.0


def _meets(report: PrivacyReport, k: int, l_div: int | None, limit: float) -> bool:
    if report.achieved_k < k:
        return False
    if l_div is not None and (report.achieved_l or 0) < l_div:
        return False
    return report.suppressed_records <= limit * report.records + 1e-9


def _publish(
    columns: Mapping[str, Sequence[str]], best: _Candidate, qi: Sequence[str]
) -> dict[str, list[str]]:
    table = best.table
    out: dict[str, list[str]] = {}
    position = {name: i for i, name in enumerate(qi)}
    for name, values in columns.items():
        i = position.get(name)
        if i is None:
            out[name] = list(values)
            continue
        labels = table.attributes[i].label[best.nodes[:, i]]
        labels[best.suppressed] = TOP
        out[name] = labels[table.row_tuple].tolist()
    return out


def _check(
    columns: Mapping[str, Sequence[str]],
    qi: Sequence[str],
    k: int,
    l_div: int | None,
    sensitive: str | None,
    suppression_limit: float,
    method: str,
) -> None:
    if not qi:
        raise ValueError("qi: at least one quasi-identifier is needed")
    if len(set(qi)) != len(qi):
        raise ValueError("qi: a quasi-identifier is listed twice")
    for name in [*qi, *([sensitive] if sensitive else [])]:
        if name not in columns:
            raise ValueError(f"column {name!r} is missing")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError("columns: all columns must have the same number of rows")
    if k < 1:
        raise ValueError("k: must be at least 1")
    if l_div is not None:
        if l_div < 1:
            raise ValueError("l: must be at least 1")
        if sensitive is None:
            raise ValueError("l: needs a sensitive attribute")
    if sensitive is not None and sensitive in qi:
        raise ValueError("sensitive: must not be a quasi-identifier")
    if not 0.0 <= suppression_limit <= 1.0:
        raise ValueError("suppression_limit: must be between 0 and 1")
    if method not in METHODS:
        raise ValueError(f"method: one of {', '.join(METHODS)}")
