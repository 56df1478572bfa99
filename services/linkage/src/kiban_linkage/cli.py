"""`kiban link`: the linkage matcher on CSV files (CONTRACT.md, linkage section).

    kiban link --left A.csv [--right B.csv] --id COLUMN --map col=field,... --out pairs.csv
               [--threshold P] [--delimiter D]

Extensions (documented in the service README): `--model FILE` scores with a saved model instead
of fitting one on the files; `--save-model FILE` writes the fitted model (JSON); `--possible`
also writes the pairs of the "possible" band with a fourth column `status`. Without `--map`,
columns named like a field are used as that field.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kiban_linkage.domain.matching import (
    IDENTITY_FIELDS,
    MatchModel,
    Normalized,
    dedupe,
    identity_from_mapping,
    link,
    normalize,
)

__all__ = ["add_commands", "run_link"]


_JOINED = {"address": " ", "insurance_number": "|"}


class _UsageError(Exception):
    """A message for the user; never contains a value read from the files."""


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "link",
        help="link (or deduplicate) identity records in CSV files with the linkage matcher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--left", required=True, type=Path, help="CSV file (deduplicated alone)")
    parser.add_argument("--right", type=Path, help="second CSV file to link against --left")
    parser.add_argument("--id", dest="id_column", help="record id column (default: the first)")
    parser.add_argument(
        "--map",
        dest="mapping",
        default="",
        help="col=field,... with fields " + ", ".join(IDENTITY_FIELDS),
    )
    parser.add_argument("--out", required=True, type=Path, help="pairs CSV to write")
    parser.add_argument(
        "--threshold", type=float, help="link threshold (default: the model's, 0.95)"
    )
    parser.add_argument("--delimiter", default=",", help="CSV delimiter (default ,)")
    parser.add_argument("--model", type=Path, help="score with this saved model (JSON)")
    parser.add_argument("--save-model", type=Path, help="write the fitted model (JSON)")
    parser.add_argument(
        "--possible", action="store_true", help="also write the possible band (column status)"
    )
    parser.set_defaults(run=run_link)


def _parse_mapping(text: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        column, sep, name = part.partition("=")
        if not sep or not column.strip() or name.strip() not in IDENTITY_FIELDS:
            raise _UsageError(
                "--map expects col=field pairs with fields " + ", ".join(IDENTITY_FIELDS)
            )
        mapping[column.strip()] = name.strip()
    return mapping


def _read(
    path: Path, id_column: str | None, mapping: dict[str, str], delimiter: str
) -> tuple[list[str], list[Normalized]]:
    if not path.is_file():
        raise _UsageError(f"file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None) or []
        if not header:
            raise _UsageError(f"{path.name}: no header row")
        id_col = id_column or header[0]
        if id_col not in header:
            raise _UsageError(f"{path.name}: no id column named {id_col!r}")
        columns = mapping or {h: h for h in header if h in IDENTITY_FIELDS}
        missing = [col for col in columns if col not in header]
        if missing:
            raise _UsageError(f"{path.name}: mapped column(s) not found: {', '.join(missing)}")
        if not columns:
            raise _UsageError(f"{path.name}: no column mapped to an identity field (use --map)")
        # positions instead of a dict per row (as DictReader: the last column of a name wins)
        position = {name: i for i, name in enumerate(header)}
        fields = [(position[col], name) for col, name in columns.items()]
        id_at = position[id_col]
        ids: list[str] = []
        records: list[Normalized] = []
        for row in reader:
            if not row:
                continue  # DictReader skips blank lines too
            width = len(row)
            values: dict[str, Any] = {}
            for at, name in fields:
                value = row[at] if at < width else None
                if not value:
                    continue
                if name in values and name in _JOINED:
                    # several columns may make one field (street, town, state → address)
                    values[name] = f"{values[name]}{_JOINED[name]}{value}"
                else:
                    values[name] = value
            ids.append((row[id_at] if id_at < width else None) or "")
            records.append(normalize(identity_from_mapping(values)))
    return ids, records


def run_link(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except _UsageError as exc:
        print(f"kiban link: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise _UsageError("--threshold must be in (0, 1]")
    if len(args.delimiter) != 1:
        raise _UsageError("--delimiter must be one character")
    mapping = _parse_mapping(args.mapping)
    started = time.perf_counter()
    left_ids, left = _read(args.left, args.id_column, mapping, args.delimiter)
    right_ids, right = (
        _read(args.right, args.id_column, mapping, args.delimiter)
        if args.right
        else (left_ids, left)
    )
    model: MatchModel | None = None
    if args.model:
        try:
            model = MatchModel.from_dict(json.loads(args.model.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            raise _UsageError("--model: not a readable match model") from None
    if args.threshold is not None:
        base = model or _fitted(left, right if args.right else None)
        possible = min(base.possible_threshold, args.threshold / 2)
        model = base.with_thresholds(link=args.threshold, possible=possible)
    result = link(left, right, model=model) if args.right else dedupe(left, model=model)
    if args.save_model:
        args.save_model.write_text(json.dumps(result.model.to_dict(), ensure_ascii=False))
    threshold = result.model.link_threshold
    written = band = 0
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["left_id", "right_id", "probability", *(["status"] if args.possible else [])]
        )
        order = sorted(
            range(len(result.probability)),
            key=lambda k: (int(result.left[k]), int(result.right[k])),
        )
        for k in order:
            p = float(result.probability[k])
            status = "link" if p >= threshold else "possible"
            if status == "possible":
                band += 1
                if not args.possible:
                    continue
            row = [left_ids[int(result.left[k])], right_ids[int(result.right[k])], f"{p:.6f}"]
            writer.writerow([*row, *([status] if args.possible else [])])
            written += status == "link"
    elapsed = time.perf_counter() - started
    print(
        f"kiban link: {len(left)} x {len(right) if args.right else len(left)} records, "
        f"{result.candidates} candidate pairs, {written} links (p >= {threshold:g}), "
        f"{band} possible, {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 0


def _fitted(left: Sequence[Normalized], right: Sequence[Normalized] | None) -> MatchModel:
    from kiban_linkage.domain.matching._fit import fit_dedupe, fit_link

    if right is None:
        return fit_dedupe(MatchModel.default(), left)
    return fit_link(MatchModel.default(), left, right)
