"""Text folding for Japanese (and Latin) identity strings.

Every function here is total and pure: it takes any string (or None) and returns a string (or
None when nothing comparable is left). Folds that lose information (variant kanji, long vowels,
small kana) produce separate *comparison forms*; the matcher turns agreement on each form into
its own comparison level, so "equal after folding" is evidence, never an equality.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache
from importlib import resources

import jaconv

__all__ = [
    "fold_kana",
    "kana",
    "latin_or_kanji",
    "variant_fold",
    "variant_table",
]

# Separators people and EHR systems put inside names: spaces of every width, middle dots,
# full stops ("J. Smith"), hyphens are kept (they are rare in Japanese names and meaningful in
# Latin ones) but removed in the folded form.
_SEPARATORS = re.compile(r"[\s\u3000・･.\u00b7\u2027\u30fb,、。'\"]+")
_NON_WORD = re.compile(r"[^\w]+")

# Small kana and the obsolete kana that registries spell either way.
_SMALL = str.maketrans(
    {
        "ァ": "ア",
        "ィ": "イ",
        "ゥ": "ウ",
        "ェ": "エ",
        "ォ": "オ",
        "ッ": "ツ",
        "ャ": "ヤ",
        "ュ": "ユ",
        "ョ": "ヨ",
        "ヮ": "ワ",
        "ヵ": "カ",
        "ヶ": "ケ",
        "ヂ": "ジ",
        "ヅ": "ズ",
        "ヲ": "オ",
        "ヰ": "イ",
        "ヱ": "エ",
        "ヴ": "ブ",
    }
)

_VOWEL_OF: dict[str, str] = {}
for _row, _vowel in (
    ("アカガサザタダナハバパマヤラワ", "a"),
    ("イキギシジチヂニヒビピミリ", "i"),
    ("ウクグスズツヅヌフブプムユルヴ", "u"),
    ("エケゲセゼテデネヘベペメレ", "e"),
    ("オコゴソゾトドノホボポモヨロヲ", "o"),
):
    for _ch in _row:
        _VOWEL_OF[_ch] = _vowel
# A vowel kana that only lengthens the vowel before it (タロウ, オオノ, ユウコ, ケイコ, サトオ).
_LENGTHENERS = {"a": "ア", "i": "イ", "u": "ウ", "e": "イエ", "o": "ウオ"}


@cache
def variant_table() -> dict[str, str]:
    """The maintained variant-kanji table (`data/variant_kanji.tsv`), closed transitively."""
    text = (
        resources.files("kiban_linkage.domain.matching")
        .joinpath("data/variant_kanji.tsv")
        .read_text(encoding="utf-8")
    )
    table: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("variant\t"):
            continue
        variant, standard = line.split("\t")
        table[unicodedata.normalize("NFKC", variant)] = unicodedata.normalize("NFKC", standard)
    for key in list(table):
        seen = {key}
        value = table[key]
        while value in table and value not in seen:
            seen.add(value)
            value = table[value]
        table[key] = value
    return table


@cache
def _variant_translation() -> dict[int, str]:
    return {ord(k): v for k, v in variant_table().items()}


def variant_fold(text: str) -> str:
    """Replace variant kanji by the form in the table (髙→高, 﨑→崎, 齋/齊/斉→斎, 邊/邉→辺)."""
    return text.translate(_variant_translation())


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


@lru_cache(maxsize=65536)
def kana(value: str | None) -> str | None:
    """Full-width katakana without separators: NFKC (half-width ｶﾅ → カナ), hiragana → katakana.

    Returns None when the value holds no kana at all (a romanised or kanji value in a kana
    field is not a reading)."""
    if not value:
        return None
    text = _SEPARATORS.sub("", _nfkc(value))
    text = jaconv.hira2kata(text)
    if not text or not any("\u30a1" <= ch <= "\u30fc" for ch in text):
        return None
    return text


@lru_cache(maxsize=65536)
def fold_kana(text: str | None) -> str | None:
    """The reading with small kana enlarged, ー removed and vowel lengtheners dropped.

    タロウ/タロー/タロ → タロ, オオノ/オーノ/オノ → オノ, キョウコ/キヨコ → キヨコ. A comparison
    form only: two readings equal here are "kana-folded equal", a weaker level than equal."""
    if not text:
        return None
    base = text.translate(_SMALL)
    out: list[str] = []
    previous_vowel = ""
    for ch in base:
        if ch == "ー":
            continue
        if previous_vowel and ch in _LENGTHENERS[previous_vowel]:
            # a lengthener is folded once: オオオ is unusual enough to keep
            previous_vowel = ""
            continue
        out.append(ch)
        previous_vowel = _VOWEL_OF.get(ch, "")
    return "".join(out) or None


@lru_cache(maxsize=65536)
def latin_or_kanji(value: str | None) -> tuple[str | None, str | None]:
    """(exact form, normalized form) of a name written in kanji or Latin letters.

    exact: NFKC without separators (width differences and spaces are not evidence of
    anything); normalized: also variant-folded, case-folded, hiragana turned to katakana and
    punctuation removed. None when empty."""
    if not value:
        return None, None
    exact = _SEPARATORS.sub("", _nfkc(value))
    if not exact:
        return None, None
    normalized = _NON_WORD.sub("", jaconv.hira2kata(variant_fold(exact)).casefold())
    return exact, normalized or None
