"""The privacy report of an anonymized table, computed from its published form.

Definitions (records = all input rows, suppressed ones included; q = number of QIs):

- equivalence class: records whose published quasi-identifiers are equal (a suppressed record
  shows `*` everywhere, so suppressed records form one class, merged with a class generalized
  to `*` everywhere if there is one) — the same classes an independent checker sees;
- achieved k = the smallest class; achieved l = the fewest distinct sensitive values in a class;
- prosecutor risk of a record = 1 / size of its class; reported as max and average over records,
  and the share of records whose risk exceeds `risk_threshold`;
- NCP of a published value = (leaves under its hierarchy node - 1) / (leaves of the hierarchy - 1)
  (0 = original value, 1 = `*`); a suppressed record costs 1 in every QI;
- GCP = mean of NCP over all records and all QIs (ARX's "Loss" with the arithmetic mean);
- discernibility = sum over classes of non-suppressed records of size², plus records x
  suppressed records (ARX's DM*); `average_class_size` = kept records / classes / k (C_AVG).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kiban_anonymizer.domain.engine._hierarchy import BoolArray, IntArray
from kiban_anonymizer.domain.engine._table import Table, combine, group


@dataclass(frozen=True)
class ClassSizes:
    min_size: int
    max_size: int
    classes: int
    records: int


@dataclass(frozen=True)
class PrivacyReport:
    method: str
    requested_k: int
    achieved_k: int
    requested_l: int | None
    achieved_l: int | None
    sensitive: str | None
    records: int
    suppressed_records: int
    suppression_limit: float
    classes: int
    class_sizes: list[ClassSizes]
    prosecutor_risk_max: float
    prosecutor_risk_avg: float
    risk_threshold: float
    records_at_risk: float
    gcp: float
    ncp_by_attribute: dict[str, float]
    discernibility: float
    average_class_size: float
    transformation: dict[str, int] | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(
    table: Table,
    nodes: IntArray,
    suppressed: BoolArray,
    *,
    method: str,
    k: int,
    l_div: int | None,
    sensitive: str | None,
    suppression_limit: float,
    risk_threshold: float,
    transformation: dict[str, int] | None = None,
    details: dict[str, Any] | None = None,
) -> PrivacyReport:
    """Report on the published table given per distinct tuple: `nodes` (tuples, qi) output
    node ids and `suppressed` (tuples,) flags."""
    attrs = table.attributes
    q = len(attrs)
    w = table.weight
    n = table.records
    published = nodes.copy()
    for i, a in enumerate(attrs):
        published[suppressed, i] = a.top
    cls, ncls = combine([published[:, i] for i in range(q)], [a.nodes for a in attrs])
    size = np.bincount(cls, weights=w, minlength=ncls).astype(np.int64)
    achieved_k = int(size.min()) if ncls else 0
    achieved_l: int | None = None
    if l_div is not None and table.sensitive is not None:
        pairs, npairs = group(cls * max(table.sensitive_values, 1) + table.sensitive)
        owner = np.empty(npairs, dtype=np.int64)
        owner[pairs] = cls
        achieved_l = int(np.bincount(owner, minlength=ncls).min()) if ncls else 0
    s = int(w[suppressed].sum())
    risk = 1.0 / size[cls]  # per tuple
    ncp_by = {}
    total = 0.0
    for i, a in enumerate(attrs):
        cost = float((np.where(suppressed, 1.0, a.ncp[nodes[:, i]]) * w).sum())
        total += cost
        ncp_by[a.name] = cost / n if n else 0.0
    kept_cls, kept_n = group(cls[~suppressed]) if (~suppressed).any() else (cls[:0], 0)
    kept_sizes = np.bincount(kept_cls, weights=w[~suppressed], minlength=kept_n)
    dm = float((kept_sizes.astype(np.float64) ** 2).sum()) + float(s) * n
    return PrivacyReport(
        method=method,
        requested_k=k,
        achieved_k=achieved_k,
        requested_l=l_div,
        achieved_l=achieved_l,
        sensitive=sensitive,
        records=n,
        suppressed_records=s,
        suppression_limit=suppression_limit,
        classes=ncls,
        class_sizes=_histogram(size),
        prosecutor_risk_max=float(risk.max()) if n else 0.0,
        prosecutor_risk_avg=float((risk * w).sum()) / n if n else 0.0,
        risk_threshold=risk_threshold,
        records_at_risk=float(w[risk > risk_threshold].sum()) / n if n else 0.0,
        gcp=total / (n * q) if n and q else 0.0,
        ncp_by_attribute=ncp_by,
        discernibility=dm,
        average_class_size=(n - s) / kept_n / k if kept_n else 0.0,
        transformation=transformation,
        details=details or {},
    )


def _histogram(size: IntArray) -> list[ClassSizes]:
    """Class sizes in bins [1], [2,3], [4,7], ... (powers of two)."""
    if len(size) == 0:
        return []
    bins = np.floor(np.log2(size)).astype(np.int64)
    out = []
    for b in np.unique(bins):
        mask = bins == b
        out.append(
            ClassSizes(
                min_size=int(2**b),
                max_size=int(2 ** (b + 1) - 1),
                classes=int(mask.sum()),
                records=int(size[mask].sum()),
            )
        )
    return out
