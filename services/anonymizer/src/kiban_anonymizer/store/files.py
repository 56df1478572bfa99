"""Dataset files on the file store: `<files_dir>/<release_id>/<table>.csv|.parquet`.

A build writes into a private staging directory and moves it into place only when it is
released, so a reader never sees half a release and a rebuild never mixes two attempts.
CSV is for anyone (UTF-8, header row, empty cell for a missing value); Parquet (pyarrow) keeps
column types (dates, numbers) and compresses, which is what analysis tools read fastest.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from kiban_anonymizer.domain.dataset import Table


@dataclass(frozen=True)
class WrittenFile:
    name: str
    rows: int
    sha256: str
    path: Path


def staging_dir(files_dir: Path, build_id: str) -> Path:
    return files_dir / f".staging-{build_id}"


def write_tables(tables: list[Table], directory: Path) -> list[WrittenFile]:
    """Write every table as CSV and Parquet into `directory` (emptied first)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    written = []
    for table in tables:
        csv_path = directory / f"{table.name}.csv"
        with csv_path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(table.columns)
            writer.writerows([_cell(v) for v in row] for row in table.rows)
        parquet_path = directory / f"{table.name}.parquet"
        columns = {name: [row[i] for row in table.rows] for i, name in enumerate(table.columns)}
        pq.write_table(pa.table(_typed(columns)), parquet_path)
        for path in (csv_path, parquet_path):
            written.append(WrittenFile(path.name, len(table.rows), _sha256(path), path))
    return written


def publish(staging: Path, final: Path) -> None:
    """Move a staged release into place (replacing what an interrupted attempt left)."""
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(final)


def discard(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return value


def _typed(columns: dict[str, list[Any]]) -> dict[str, Any]:
    """Arrow arrays; a column whose values are all missing is a string column."""
    out = {}
    for name, values in columns.items():
        if all(v is None for v in values):
            out[name] = pa.array(values, type=pa.string())
        else:
            out[name] = pa.array(values)
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
