"""`kiban link` on CSV files, through the real `kiban` entry point."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kiban_cli.main import main

_HEADER = ["pid", "sei", "mei", "sei_kana", "mei_kana", "dob", "zip", "hoken"]
_LEFT = [
    ["L1", "髙橋", "太郎", "タカハシ", "タロウ", "1980-01-02", "160-0023", "06130017-12-345-01"],
    ["L2", "北浦", "花子", "キタウラ", "ハナコ", "1975-03-04", "530-0001", "27130045-88-901-01"],
    ["L3", "山田", "誠", "ヤマダ", "マコト", "1990-12-24", "060-0001", ""],
]
_RIGHT = [
    [
        "R1",
        "高橋",
        "太郎",
        "たかはし",
        "ﾀﾛｰ",
        "昭和55年1月2日",
        "〒１６０－００２３",
        "06130017 記号12 番号345 枝番01",
    ],
    ["R2", "北浦", "花子", "キタウラ", "ハナコ", "19750304", "5300001", ""],
    ["R3", "鈴木", "一郎", "スズキ", "イチロウ", "2001/5/6", "100-0001", ""],
]
_MAP = (
    "sei=family_name,mei=given_name,sei_kana=family_name_kana,mei_kana=given_name_kana,"
    "dob=birth_date,zip=postal_code,hoken=insurance_number"
)


def _write(path: Path, rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(_HEADER)
        writer.writerows(rows)
    return path


def _pairs(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_link_two_files_writes_the_linked_pairs(tmp_path: Path) -> None:
    left, right = _write(tmp_path / "a.csv", _LEFT), _write(tmp_path / "b.csv", _RIGHT)
    out = tmp_path / "pairs.csv"
    code = main(
        [
            "link",
            "--left",
            str(left),
            "--right",
            str(right),
            "--id",
            "pid",
            "--map",
            _MAP,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    rows = _pairs(out)
    assert [(r["left_id"], r["right_id"]) for r in rows] == [("L1", "R1"), ("L2", "R2")]
    assert all(0.7 <= float(r["probability"]) <= 1.0 for r in rows)
    assert list(rows[0]) == ["left_id", "right_id", "probability"]


def test_link_one_file_deduplicates_with_semicolons(tmp_path: Path) -> None:
    rows = [*_LEFT, ["L9", *_RIGHT[0][1:]]]
    left = _write(tmp_path / "a.csv", rows, delimiter=";")
    out = tmp_path / "pairs.csv"
    code = main(["link", "--left", str(left), "--map", _MAP, "--out", str(out), "--delimiter", ";"])
    assert code == 0
    assert [(r["left_id"], r["right_id"]) for r in _pairs(out)] == [("L1", "L9")]


def test_the_threshold_decides_which_pairs_are_written(tmp_path: Path) -> None:
    weak = ["R4", "山田", "誠", "ヤマダ", "マコト", "", "", ""]  # names only: a weaker pair
    left, right = _write(tmp_path / "a.csv", _LEFT), _write(tmp_path / "b.csv", [*_RIGHT, weak])
    out = tmp_path / "pairs.csv"
    args = [
        "link",
        "--left",
        str(left),
        "--right",
        str(right),
        "--id",
        "pid",
        "--map",
        _MAP,
        "--out",
        str(out),
    ]
    assert main([*args, "--threshold", "0.01"]) == 0
    loose = _pairs(out)
    assert ("L3", "R4") in {(r["left_id"], r["right_id"]) for r in loose}
    weakest = min(float(r["probability"]) for r in loose)
    assert weakest < 0.999
    assert main([*args, "--threshold", str(min(weakest + 1e-6, 1.0))]) == 0
    strict = _pairs(out)
    assert len(strict) == len(loose) - 1
    assert all(float(r["probability"]) > weakest for r in strict)


def test_unmapped_columns_named_like_fields_are_used(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "family_name", "given_name_kana", "birth_date"])
        writer.writerow(["1", "髙橋", "タロウ", "1980-01-02"])
        writer.writerow(["2", "高橋", "たろう", "S55.1.2"])
    out = tmp_path / "pairs.csv"
    assert main(["link", "--left", str(path), "--out", str(out)]) == 0
    assert [(r["left_id"], r["right_id"]) for r in _pairs(out)] == [("1", "2")]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--map", "sei=nickname"], "--map"),
        (["--threshold", "1.5"], "--threshold"),
        (["--id", "nope"], "no id column"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument_not_the_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    left = _write(tmp_path / "a.csv", _LEFT)
    code = main(["link", "--left", str(left), "--out", str(tmp_path / "o.csv"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "髙橋" not in err
    assert "タカハシ" not in err
