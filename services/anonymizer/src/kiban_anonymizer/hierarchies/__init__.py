"""Reference tables the generalization hierarchies are built from (package data, with sources).

- `icd10_chapters.csv`, `icd10_blocks.csv`: WHO ICD-10 (2019 edition) chapters and blocks as
  3-character category ranges, transcribed from the WHO ICD-10 browser
  (https://icd.who.int/browse10/2019/en). Japan's ICD-10 (2013) edition uses the same blocks.
- `postal_prefecture.csv`: the first three digits of a Japanese postal code → prefecture
  (JIS X 0401 code, name, region), from Japan Post's allocation of postal codes to prefectures
  (郵便番号データ KEN_ALL.CSV, https://www.post.japanpost.jp/zipcode/download.html).
"""
