"""Re-identification figures measured on what a dataset actually releases.

These are computed from the released quasi-identifier values, independently of the engine's
own report, so a defect in the engine cannot make a dataset look safer than it is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClassFigures:
    k: int
    l: int | None  # noqa: E741 — the l of l-diversity
    classes: int
    size_distribution: dict[int, int]
    prosecutor_max: float
    prosecutor_avg: float
    records_above_threshold: float  # share of records whose risk exceeds the threshold

    def to_dict(self, threshold: float) -> dict[str, object]:
        return {
            "k": self.k,
            "l": self.l,
            "equivalence_classes": self.classes,
            "class_sizes": {str(size): n for size, n in sorted(self.size_distribution.items())},
            "prosecutor_risk": {
                "max": round(self.prosecutor_max, 6),
                "average": round(self.prosecutor_avg, 6),
                "threshold": threshold,
                "records_above_threshold": round(self.records_above_threshold, 6),
            },
        }


def class_figures(
    keys: Sequence[tuple[str, ...]],
    *,
    sensitive: Sequence[str] | None = None,
    threshold: float,
) -> ClassFigures:
    """k (smallest class), distinct l, class sizes and prosecutor risk of released records."""
    if not keys:
        return ClassFigures(0, None, 0, {}, 0.0, 0.0, 0.0)
    sizes = Counter(keys)
    risks = [1 / sizes[key] for key in keys]
    achieved_l: int | None = None
    if sensitive is not None:
        values: dict[tuple[str, ...], set[str]] = defaultdict(set)
        for key, value in zip(keys, sensitive, strict=True):
            values[key].add(value)
        achieved_l = min(len(v) for v in values.values())
    return ClassFigures(
        k=min(sizes.values()),
        l=achieved_l,
        classes=len(sizes),
        size_distribution=dict(Counter(sizes.values())),
        prosecutor_max=max(risks),
        prosecutor_avg=sum(risks) / len(risks),
        records_above_threshold=sum(r > threshold for r in risks) / len(risks),
    )
