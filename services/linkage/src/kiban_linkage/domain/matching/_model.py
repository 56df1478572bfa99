"""The Fellegi–Sunter model: m/u per comparison level, term frequencies, prior, thresholds.

probability(a, b) = sigmoid(logit(prior) + Σ_f ln(m_f[l]/u_f[l]) + tf adjustments), where
- u (chance agreement) comes from random pairs (all but certainly non-matches),
- m (agreement among matches) and the prior come from EM on blocked candidate pairs with u fixed,
- the prior is per pair of records (matches / all pairs), so a probability does not depend on
  which blocking key brought the pair together,
- names that agree get their u replaced by the frequency of the value: 佐藤 agreeing is weaker
  evidence than a rare surname agreeing (ratio clipped to [1/TF_CLIP, TF_CLIP]).

One rule sits on top (the "homonym" rule): a pair whose support is only name + birth date
(+ sex), while location (address/postal) or insurer contradict it and nothing else agrees, is
never linked automatically when that name + birth date is common enough that another person in
the index may share it (expected number of such people ≥ HOMONYM_RISK): its probability is
compressed into the possible band. Two different people sharing a common name and birth date
look exactly like one person who moved and changed insurer; only a human can tell them apart.
Conditional independence (the model's assumption) understates how often that happens.

A second rule keeps relatives apart: a pair in the same insured household under another 枝番
(the branch is per person), or whose given names have different readings (kana on both sides;
without readings a wholly different given name is as often an entry error) while the family
name and the birth date (twins) are shared and no insurance number is, is at most "possible".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from kiban_linkage.domain.matching import _compare as c
from kiban_linkage.domain.matching._identity import Normalized

__all__ = ["MatchModel"]

TF_CLIP = 100.0
HOMONYM_RISK = 3e-5  # about one chance in 30,000 that someone else shares name and birth
DEFAULT_POPULATION = 1_000_000  # index size assumed by a model that has not been fitted
FloatArray = npt.NDArray[np.float64]

# Priors: the default model (an empty index) and the EM starting point. u values are for
# Japanese identities in a population of ~1M; m values from typical registry error rates.
_DEFAULT_M: dict[str, list[float]] = {
    "family_name": [0.80, 0.03, 0.04, 0.03, 0.03, 0.02, 0.03, 0.02],
    "given_name": [0.82, 0.03, 0.04, 0.03, 0.04, 0.02, 0.015, 0.005],
    "birth_date": [0.95, 0.01, 0.025, 0.01, 0.005],
    "sex": [0.99, 0.01],
    "postal_code": [0.82, 0.06, 0.12],
    "address": [0.70, 0.15, 0.02, 0.13],
    "insurance": [0.75, 0.01, 0.02, 0.22],
}
_DEFAULT_U: dict[str, list[float]] = {
    "family_name": [0.002, 0.0002, 0.0005, 0.0005, 0.002, 0.02, 0.1, 0.875],
    "given_name": [0.002, 0.0002, 0.0005, 0.0005, 0.002, 0.02, 0.1, 0.875],
    "birth_date": [3.5e-5, 3e-6, 3e-4, 4e-3, 0.9957],
    "sex": [0.5, 0.5],
    "postal_code": [2e-4, 5e-3, 0.9948],
    "address": [2e-5, 1e-5, 2e-3, 0.99797],
    "insurance": [1e-6, 1e-5, 1e-5, 0.999979],
}
_DEFAULT_PRIOR = 1e-6  # one match per ~1M pairs: an index of about a million records


@dataclass
class MatchModel:
    """Serializable match model (`to_dict`/`from_dict` round-trip exactly)."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float
    tf: dict[str, dict[str, float]] = field(default_factory=dict)  # field -> value -> freq
    tf_sumsq: dict[str, float] = field(default_factory=dict)  # Σ freq² (chance agreement)
    tf_unseen: dict[str, float] = field(default_factory=dict)  # freq of a value not in tf
    link_threshold: float = 0.70
    possible_threshold: float = 0.10
    fitted_on: int = 0  # records the model was fitted on (0 = prior only)

    def __post_init__(self) -> None:
        self._weights = {f: np.log(np.asarray(self.m[f]) / np.asarray(self.u[f])) for f in c.FIELDS}
        self._prior_logit = math.log(self.prior / (1.0 - self.prior))

    # -- construction -------------------------------------------------------------------

    @classmethod
    def default(cls) -> MatchModel:
        """Priors for an empty index, with the national surname frequencies as TF table."""
        from kiban_linkage.domain.matching._tables import surname_frequencies

        freqs = surname_frequencies()
        total = sum(freqs.values())
        sumsq = sum(f * f for f in freqs.values()) + (1.0 - total) * 1e-5
        return cls(
            m={k: list(v) for k, v in _DEFAULT_M.items()},
            u={k: list(v) for k, v in _DEFAULT_U.items()},
            prior=_DEFAULT_PRIOR,
            tf={"family_name": freqs},
            tf_sumsq={"family_name": sumsq},
            tf_unseen={"family_name": 1e-5},
        )

    @classmethod
    def fit(cls, records: Sequence[Normalized], *, seed: int = 0) -> MatchModel:
        """Estimate u from random pairs, m and the prior by EM on blocked pairs (no labels)."""
        from kiban_linkage.domain.matching._fit import fit_dedupe

        return fit_dedupe(cls.default(), records, seed=seed)

    def with_thresholds(self, *, link: float, possible: float) -> MatchModel:
        if not 0.0 < possible < link <= 1.0:
            raise ValueError("thresholds must satisfy 0 < possible < link <= 1")
        return replace(self, link_threshold=link, possible_threshold=possible)

    # -- serialization ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "fields": list(c.FIELDS),
            "levels": {f: list(c.LEVELS[f]) for f in c.FIELDS},
            "m": self.m,
            "u": self.u,
            "prior": self.prior,
            "tf": self.tf,
            "tf_sumsq": self.tf_sumsq,
            "tf_unseen": self.tf_unseen,
            "link_threshold": self.link_threshold,
            "possible_threshold": self.possible_threshold,
            "fitted_on": self.fitted_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MatchModel:
        if data.get("version") != 1 or list(data.get("fields", [])) != list(c.FIELDS):
            raise ValueError("unsupported match model version or fields")
        return cls(
            m={f: [float(x) for x in data["m"][f]] for f in c.FIELDS},
            u={f: [float(x) for x in data["u"][f]] for f in c.FIELDS},
            prior=float(data["prior"]),
            tf={f: {str(k): float(v) for k, v in t.items()} for f, t in data["tf"].items()},
            tf_sumsq={f: float(v) for f, v in data["tf_sumsq"].items()},
            tf_unseen={f: float(v) for f, v in data["tf_unseen"].items()},
            link_threshold=float(data["link_threshold"]),
            possible_threshold=float(data["possible_threshold"]),
            fitted_on=int(data.get("fitted_on", 0)),
        )

    # -- scoring ------------------------------------------------------------------------

    def tf_weight(self, field_name: str, value: str | None) -> float:
        """Log-factor added when names agree on `value` (negative for common values)."""
        table = self.tf.get(field_name)
        if table is None or value is None:
            return 0.0
        freq = table.get(value, self.tf_unseen[field_name])
        ratio = freq / self.tf_sumsq[field_name]
        return -math.log(min(max(ratio, 1.0 / TF_CLIP), TF_CLIP))

    def frequency(self, field_name: str, value: str | None) -> float:
        """Share of records carrying `value` (chance agreement when the table lacks it)."""
        table = self.tf.get(field_name)
        if table is None or value is None:
            return self.u[field_name][0]
        return table.get(value, self.tf_unseen[field_name])

    def homonym_risk(self, a: Normalized) -> float:
        """Expected number of other people in the index with a's names and birth date."""
        population = self.fitted_on or DEFAULT_POPULATION
        return (
            population
            * self.frequency("family_name", a.family_key)
            * self.frequency("given_name", a.given_key)
            * self.u["birth_date"][0]
        )

    def match_weight(self, levels: Sequence[int], a: Normalized) -> float:
        """ln of the likelihood ratio of a comparison vector (without the prior)."""
        total = 0.0
        for f, level in enumerate(levels):
            if level >= 0:
                total += float(self._weights[c.FIELDS[f]][level])
        if 0 <= levels[c.FAMILY] <= 3:
            total += self.tf_weight("family_name", a.family_key)
        if 0 <= levels[c.GIVEN] <= 3:
            total += self.tf_weight("given_name", a.given_key)
        return total

    def probability(self, a: Normalized, b: Normalized) -> float:
        """Calibrated probability that a and b are the same person (0..1)."""
        levels = c.compare(a, b)
        logit = self._prior_logit + self.match_weight(levels, a)
        p = _sigmoid(logit)
        if _relatives(levels) or (_uncorroborated(levels) and self.homonym_risk(a) >= HOMONYM_RISK):
            p = self._compress(p)
        return p

    def _compress(self, p: float) -> float:
        lo, hi = self.possible_threshold, self.link_threshold
        if p <= lo:
            return p
        return lo + (p - lo) * (hi - lo) / (1.0 - lo) * 0.999

    def classify(self, probability: float) -> str:
        """`link`, `possible` or `none` for a probability under this model's thresholds."""
        if probability >= self.link_threshold:
            return "link"
        if probability >= self.possible_threshold:
            return "possible"
        return "none"

    def probabilities(
        self,
        levels: npt.NDArray[np.int8],
        tf_family: FloatArray,
        tf_given: FloatArray,
        risk: FloatArray,
    ) -> FloatArray:
        """Vectorized `probability` for a matrix of comparison vectors; tf_* are the
        per-pair `tf_weight` of the a-side values, risk their `homonym_risk`."""
        logit = self.match_weights(levels, tf_family, tf_given) + self._prior_logit
        p: FloatArray = 1.0 / (1.0 + np.exp(-logit))
        capped = relatives(levels) | (uncorroborated(levels) & (risk >= HOMONYM_RISK))
        if capped.any():
            lo, hi = self.possible_threshold, self.link_threshold
            sel = capped & (p > lo)
            p[sel] = lo + (p[sel] - lo) * (hi - lo) / (1.0 - lo) * 0.999
        return p

    def match_weights(
        self, levels: npt.NDArray[np.int8], tf_family: FloatArray, tf_given: FloatArray
    ) -> FloatArray:
        total = np.zeros(len(levels), dtype=np.float64)
        for f, name in enumerate(c.FIELDS):
            # weights with a leading 0 so that level -1 (missing) indexes to no evidence
            table = np.concatenate(([0.0], self._weights[name]))
            total += table[levels[:, f].astype(np.int64) + 1]
        fam, giv = levels[:, c.FAMILY], levels[:, c.GIVEN]
        total += np.where((fam >= 0) & (fam <= 3), tf_family, 0.0)
        total += np.where((giv >= 0) & (giv <= 3), tf_given, 0.0)
        return total


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _uncorroborated(levels: Sequence[int]) -> bool:
    postal, address, ins = levels[c.POSTAL], levels[c.ADDRESS], levels[c.INSURANCE]
    if levels[c.DOB] != 0 or postal == 0 or 0 <= address <= 1 or ins in (0, 2):
        return False
    return address >= 2 or (address < 0 and postal >= 1) or ins in (1, 3)


def _relatives(levels: Sequence[int]) -> bool:
    ins = levels[c.INSURANCE]
    if ins == 1:
        return True
    return (
        levels[c.GIVEN] == 7
        and ins not in (0, 2)
        and 0 <= levels[c.FAMILY] <= 3
        and levels[c.DOB] <= 0
    )


def relatives(levels: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """Pairs that look like two members of one family: the same insured household under
    another 枝番 (one per person), or given-name readings that differ with the family name and
    the birth date (or no birth date) shared and no insurance number (one per person) shared
    — twins and siblings."""
    fam, giv, ins = levels[:, c.FAMILY], levels[:, c.GIVEN], levels[:, c.INSURANCE]
    own_number = (ins == 0) | (ins == 2)
    twins = (giv == 7) & ~own_number & (fam >= 0) & (fam <= 3) & (levels[:, c.DOB] <= 0)
    out: npt.NDArray[np.bool_] = (ins == 1) | twins
    return out


def uncorroborated(levels: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
    """Pairs with the same birth date that nothing else (no address, postal code or insurance
    number) supports while location or insurer contradicts them (see the module docstring)."""
    postal, address, ins = levels[:, c.POSTAL], levels[:, c.ADDRESS], levels[:, c.INSURANCE]
    location_agrees = (postal == 0) | ((address >= 0) & (address <= 1))
    corroborated = location_agrees | (ins == 0) | (ins == 2)
    location_contradicts = (address >= 2) | ((address < 0) & (postal >= 1))
    insurer_contradicts = (ins == 1) | (ins == 3)
    same_birth = levels[:, c.DOB] == 0
    out: npt.NDArray[np.bool_] = (
        same_birth & ~corroborated & (location_contradicts | insurer_contradicts)
    )
    return out
