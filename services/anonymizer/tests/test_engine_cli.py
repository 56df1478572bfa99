"""`kiban anonymize` on ARX's adult data, checked by the independent `pycanon` package."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest
from pycanon import anonymity

from kiban_cli.main import main

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "bench" / "anonymizer" / "data"
QI = [
    "age",
    "sex",
    "race",
    "marital-status",
    "education",
    "native-country",
    "workclass",
    "occupation",
]


def hierarchy_args() -> list[str]:
    out = []
    for q in QI:
        out += ["--hierarchy", f"{q}={DATA / f'adult_hierarchy_{q}.csv'}"]
    return out


def pycanon(path: Path, sensitive: str | None, delimiter: str) -> dict[str, int | None]:
    """k and l as the independent `pycanon` package measures them on the published CSV
    (suppressed rows included, as the all-`*` class they form)."""
    frame = pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, na_filter=False)
    return {
        "rows": len(frame),
        "k": int(anonymity.k_anonymity(frame, QI)),
        "l": int(anonymity.l_diversity(frame, QI, [sensitive])) if sensitive else None,
    }


def read(path: Path, delimiter: str) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle, delimiter=delimiter))


@pytest.mark.parametrize(("l", "method"), [(None, "auto"), (2, "local"), (None, "optimal")])
def test_anonymize_adult_keeps_rows_and_columns_and_pycanon_confirms_k_and_l(
    tmp_path: Path,
    l: int | None,  # noqa: E741
    method: str,
) -> None:
    out = tmp_path / "out.csv"
    report_path = tmp_path / "report.json"
    argv = [
        "anonymize",
        "--input",
        str(DATA / "adult.csv"),
        "--qi",
        ",".join(QI),
        "--k",
        "5",
        *hierarchy_args(),
        "--out",
        str(out),
        "--report",
        str(report_path),
        "--method",
        method,
    ]
    if l:
        argv += ["--sensitive", "salary-class", "--l", str(l)]
    assert main(argv) == 0
    source = read(DATA / "adult.csv", ";")
    published = read(out, ";")  # the input's delimiter was detected and kept
    assert published[0] == source[0]
    assert len(published) == len(source)
    header = source[0]
    for before, after in zip(source[1:], published[1:], strict=True):
        assert after[header.index("salary-class")] == before[header.index("salary-class")]
    report = json.loads(report_path.read_text())
    assert report["achieved_k"] >= 5
    assert report["method"] in {"local", "optimal"}
    assert report["gcp"] < (0.5 if method == "optimal" else 0.2)
    checked = pycanon(out, "salary-class" if l else None, ";")
    assert checked["rows"] == len(source) - 1
    assert checked["k"] >= 5
    assert checked["k"] == report["achieved_k"]
    if l:
        assert checked["l"] >= l
    suppressed_rows = [row for row in published[1:] if all(row[header.index(q)] == "*" for q in QI)]
    assert len(suppressed_rows) >= report["suppressed_records"]


def test_unreachable_request_exits_2_without_echoing_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tiny.csv"
    source.write_text("name,age\nYamada-Taro,41\nSato-Hanako,42\n", encoding="utf-8")
    code = main(
        [
            "anonymize",
            "--input",
            str(source),
            "--qi",
            "age",
            "--k",
            "5",
            "--out",
            str(tmp_path / "o.csv"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "k=5" in err
    assert "Yamada" not in err
    assert "41" not in err


def test_comma_input_without_hierarchy_uses_value_or_star(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    rows = ["id,sex,age"] + [f"{i},{'MF'[i % 2]},{30 + i % 3}" for i in range(12)]
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    assert (
        main(
            ["anonymize", "--input", str(source), "--qi", "sex,age", "--k", "2", "--out", str(out)]
        )
        == 0
    )
    published = read(out, ",")
    assert [r[0] for r in published] == [r.split(",")[0] for r in rows]
    assert all(r[1] in {"M", "F", "*"} and r[2] in {"30", "31", "32", "*"} for r in published[1:])
