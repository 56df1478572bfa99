"""Independent check of an anonymized CSV with the `pycanon` package (CSIC's anonymity
checker), run in its own environment because pycanon pins `typing-extensions==4.15.0`, which
the workspace cannot take (its FastAPI needs a newer one):

    uv run --isolated --no-project --with pycanon==1.3.6 python bench/anonymizer/pycanon_check.py \
        --input out.csv --qi a,b,c [--sensitive s] [--delimiter ';']

Prints one JSON line: {"k": ..., "l": ..., "rows": ...} as pycanon measures them on the whole
published table (suppressed rows included, as the all-`*` class they form).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
from pycanon import anonymity


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", required=True)
    parser.add_argument("--qi", required=True)
    parser.add_argument("--sensitive")
    parser.add_argument("--delimiter", default=",")
    args = parser.parse_args()
    frame = pd.read_csv(
        args.input, sep=args.delimiter, dtype=str, keep_default_na=False, na_filter=False
    )
    qi = args.qi.split(",")
    out: dict[str, int | None] = {"rows": len(frame), "k": anonymity.k_anonymity(frame, qi)}
    out["l"] = anonymity.l_diversity(frame, qi, [args.sensitive]) if args.sensitive else None
    print(json.dumps(out))


if __name__ == "__main__":
    main()
