"""`kiban anonymize`: the anonymization engine on a CSV file.

The output keeps every input row and column in order; quasi-identifiers are written as hierarchy
labels, a suppressed row has `*` in every quasi-identifier. Hierarchy files use ARX's format (one
row per value, `;`-separated levels). Errors name options and columns, never data values.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from kiban_anonymizer.domain.engine import METHODS, Hierarchy, KAnonymityUnreachable, anonymize

_DELIMITERS = ",;\t|"


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "anonymize",
        help="k-anonymize (and l-diversify) a CSV file with ARX-format hierarchies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, type=Path, help="the CSV file to anonymize")
    parser.add_argument("--qi", required=True, help="quasi-identifier columns, comma-separated")
    parser.add_argument("--sensitive", help="the sensitive column (for --l)")
    parser.add_argument("--k", required=True, type=int, help="minimum equivalence-class size")
    parser.add_argument("--l", type=int, help="distinct l-diversity of --sensitive")
    parser.add_argument(
        "--hierarchy",
        action="append",
        default=[],
        metavar="COLUMN=FILE",
        help="ARX hierarchy file of a quasi-identifier (repeatable); a quasi-identifier without "
        "one is kept or replaced by *",
    )
    parser.add_argument(
        "--suppression", type=float, default=0.02, help="largest share of rows suppressed"
    )
    parser.add_argument("--out", required=True, type=Path, help="the anonymized CSV")
    parser.add_argument("--report", type=Path, help="where to write the privacy report (JSON)")
    parser.add_argument("--delimiter", help="the input's delimiter (detected otherwise)")
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="extension: optimal full-domain, local recoding, or auto (lower information loss)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, KAnonymityUnreachable, OSError) as exc:
        print(f"kiban anonymize: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    delimiter = _delimiter(args.delimiter) if args.delimiter else _detect(args.input)
    frame = pd.read_csv(
        args.input,
        sep=delimiter,
        dtype=str,
        keep_default_na=False,
        na_filter=False,
        quoting=csv.QUOTE_MINIMAL,
        encoding="utf-8-sig",
    )
    qi = [name.strip() for name in args.qi.split(",") if name.strip()]
    hierarchies = {}
    for item in args.hierarchy:
        column, sep, file = item.partition("=")
        if not sep or not column or not file:
            raise ValueError("--hierarchy: expected COLUMN=FILE")
        if column not in qi:
            raise ValueError(f"--hierarchy: {column!r} is not a quasi-identifier")
        path = Path(file)
        hierarchies[column] = Hierarchy.from_arx_file(path, delimiter=_detect(path, ";"))
    columns = {name: frame[name].tolist() for name in frame.columns}
    result = anonymize(
        columns,
        qi=qi,
        hierarchies=hierarchies,
        k=args.k,
        l=args.l,
        sensitive=args.sensitive,
        suppression_limit=args.suppression,
        method=args.method,
    )
    pd.DataFrame(result.columns, columns=list(frame.columns)).to_csv(
        args.out, sep=delimiter, index=False, lineterminator="\n"
    )
    report = result.report.to_dict()
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    l_part = f" l={report['achieved_l']}" if report["achieved_l"] is not None else ""
    print(
        f"kiban anonymize: {report['records']} rows, method {result.method_used}, "
        f"k={report['achieved_k']}{l_part}, suppressed {report['suppressed_records']}, "
        f"GCP {report['gcp']:.4f}"
    )
    return 0


def _delimiter(value: str) -> str:
    value = {"\\t": "\t", "tab": "\t"}.get(value, value)
    if len(value) != 1:
        raise ValueError("--delimiter: one character expected")
    return value


def _detect(path: Path, default: str = ",") -> str:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        first = sample.splitlines()[0] if sample else ""
        counts = {d: first.count(d) for d in _DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else default
