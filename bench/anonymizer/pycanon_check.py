"""Independent check of an anonymized table with the `pycanon` package (CSIC's anonymity
checker): k and distinct l as pycanon measures them on the whole published table (suppressed
rows included, as the all-`*` class they form). Used in-process by run.py; also a command:

    uv run python bench/anonymizer/pycanon_check.py --input out.csv --qi a,b,c \
        [--sensitive s] [--delimiter ';']

which prints one JSON line: {"k": ..., "l": ..., "rows": ...}.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence

import pandas as pd
from pycanon import anonymity


def check(
    columns: Mapping[str, Sequence[str]] | pd.DataFrame, qi: list[str], sensitive: str | None
) -> dict[str, int | None]:
    frame = columns if isinstance(columns, pd.DataFrame) else pd.DataFrame(dict(columns))
    out: dict[str, int | None] = {"rows": len(frame), "k": int(anonymity.k_anonymity(frame, qi))}
    out["l"] = int(anonymity.l_diversity(frame, qi, [sensitive])) if sensitive else None
    return out


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
    print(json.dumps(check(frame, args.qi.split(","), args.sensitive)))


if __name__ == "__main__":
    main()
