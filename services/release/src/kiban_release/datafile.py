"""Reading dataset files: their digest, their rows and the `person_id` values in them.

Files are CSV/TSV (delimiter sniffed among `,`, tab, `;`, `|`; a header row), NDJSON (one JSON
object per line; `.ndjson`/`.jsonl`, or a first byte `{`) or Parquet (magic `PAR1`, or
`.parquet`; read with pyarrow, the optional extra `kiban-release[parquet]`, which every image
of the platform has through the anonymizer). Blocking I/O: call from a thread.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PERSON_ID = "person_id"
_PARQUET_MAGIC = b"PAR1"
_CHUNK = 1024 * 1024
_DELIMITERS = ",\t;|"
# Without a `person_id` column every value is a candidate id; bounded so a huge unrelated file
# cannot make `trace` hold millions of strings.
MAX_LOOSE_VALUES = 200_000


class UnreadableFile(ValueError):
    """The file's format is known but it cannot be read here (no pyarrow for Parquet, or a
    Parquet file without its footer). The message never quotes the file's content."""


@dataclass
class FileDigest:
    sha256: str
    bytes: int


@dataclass
class FileIds:
    rows: int = 0
    person_ids: set[str] = field(default_factory=set)
    has_person_column: bool = False
    # Every distinct cell value when the file has no `person_id` column (a leaked sample
    # without its header), up to `MAX_LOOSE_VALUES`.
    loose_values: set[str] = field(default_factory=set)


def digest(path: Path) -> FileDigest:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
            size += len(block)
    return FileDigest(h.hexdigest(), size)


def read_ids(path: Path) -> FileIds:
    with path.open("rb") as raw:
        head = raw.read(4096)
    if head.startswith(_PARQUET_MAGIC) or path.suffix.lower() == ".parquet":
        return _parquet_ids(path)
    text_head = head.decode("utf-8-sig", errors="replace").lstrip()
    if path.suffix.lower() in (".ndjson", ".jsonl") or text_head.startswith("{"):
        return _ndjson_ids(path)
    return _csv_ids(path, text_head)


def _ndjson_ids(path: Path) -> FileIds:
    out = FileIds()
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn line of a leaked excerpt
            if not isinstance(record, dict):
                continue
            out.rows += 1
            value = record.get(PERSON_ID)
            if value is not None:
                out.has_person_column = True
                out.person_ids.add(str(value))
            elif len(out.loose_values) < MAX_LOOSE_VALUES:
                out.loose_values.update(str(v) for v in record.values() if _scalar(v))
    return out


def _parquet_ids(path: Path) -> FileIds:
    """`person_id` of a Parquet file (only that column is read), or every scalar value of a
    file without it. A Parquet sample is a file of its own (rows copied into a new file), so
    unlike a torn CSV excerpt it has its schema and footer."""
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        raise UnreadableFile(
            "reading Parquet needs pyarrow (install kiban-release[parquet])"
        ) from None
    out = FileIds()
    try:
        parquet = pq.ParquetFile(path)
        names = {str(n).strip().lower(): n for n in parquet.schema_arrow.names}
        out.rows = int(parquet.metadata.num_rows)
        if PERSON_ID in names:
            out.has_person_column = True
            for batch in parquet.iter_batches(batch_size=65_536, columns=[names[PERSON_ID]]):
                out.person_ids.update(
                    str(v) for v in batch.column(0).to_pylist() if _scalar(v) and v != ""
                )
            return out
        for batch in parquet.iter_batches(batch_size=65_536):
            for column in batch.columns:
                out.loose_values.update(str(v) for v in column.to_pylist() if _scalar(v) and v)
            if len(out.loose_values) >= MAX_LOOSE_VALUES:
                break
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UnreadableFile(f"not a readable Parquet file ({type(exc).__name__})") from None
    return out


def _csv_ids(path: Path, head: str) -> FileIds:
    delimiter = _delimiter(head)
    out = FileIds()
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        rows = csv.reader(f, delimiter=delimiter)
        header = next(rows, None)
        if header is None:
            return out
        names = [h.strip().lower() for h in header]
        if PERSON_ID in names:
            out.has_person_column = True
            column = names.index(PERSON_ID)
            for row in rows:
                if not row:
                    continue
                out.rows += 1
                if column < len(row) and row[column]:
                    out.person_ids.add(row[column])
            return out
        # No header naming `person_id`: the first line is data too.
        for row in _chain([header], rows):
            if not row:
                continue
            out.rows += 1
            if len(out.loose_values) < MAX_LOOSE_VALUES:
                out.loose_values.update(v for v in row if v)
    return out


def _delimiter(head: str) -> str:
    first = head.splitlines()[0] if head else ""
    counts = {d: first.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _chain(first: list[list[str]], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield from first
    yield from rest


def _scalar(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)
