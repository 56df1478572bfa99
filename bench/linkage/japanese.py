# ruff: noqa: E501  (name tables: one long line per table reads better)
"""A synthetic Japanese identity benchmark, generated with a fixed seed (no real person).

People get surnames with realistic frequencies (the national ranking in the engine's
`surnames.tsv` plus a generated long tail), given names by sex from a frequency list, birth
dates, addresses with matching postal codes, and health-insurance numbers (保険者番号・記号・番号・
枝番, one household sharing 記号番号). Two files are produced:

- A: one registration per person (kanji + katakana, ISO dates, canonical formats);
- B: a second registration for most people, at another institution: variant kanji (髙/﨑/齋/邊),
  hiragana or half-width kana, long-vowel spellings (タロウ/タロー, オオノ/オーノ), spaces, era
  and slashed dates, full-width digits, 〒 postal codes, typos, day/month swaps, moved addresses,
  changed insurers, married names, missing fields.

Hard cases are planted on purpose: groups of different people sharing a common name, sex and
birth date (differing in address and insurer), and twins (same surname, birth date, address and
insured household, different given names and 枝番).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

import jaconv

from kiban_linkage.domain.matching import Identity
from kiban_linkage.domain.matching._tables import surnames
from kiban_linkage.domain.matching._text import variant_table

_MALE = (
    "太郎 タロウ,一郎 イチロウ,健太 ケンタ,翔太 ショウタ,大輔 ダイスケ,拓也 タクヤ,誠 マコト,浩 ヒロシ,"
    "隆 タカシ,清 キヨシ,茂 シゲル,勇 イサム,博 ヒロシ,修 オサム,健一 ケンイチ,直樹 ナオキ,"
    "大樹 ダイキ,蓮 レン,大翔 ヒロト,悠真 ユウマ,陽翔 ハルト,湊 ミナト,翔 ショウ,亮 リョウ,"
    "和也 カズヤ,達也 タツヤ,秀樹 ヒデキ,康弘 ヤスヒロ,正 タダシ,進 ススム,雄一 ユウイチ,"
    "浩二 コウジ,幸男 ユキオ,光男 ミツオ,洋平 ヨウヘイ,航 ワタル,颯太 ソウタ,優斗 ユウト,"
    "陸 リク,悠人 ユウト,雄大 ユウダイ,智也 トモヤ,裕太 ユウタ,剛 ツヨシ,聡 サトシ,晃 アキラ"
)
_FEMALE = (
    "花子 ハナコ,陽子 ヨウコ,恵子 ケイコ,裕子 ユウコ,美咲 ミサキ,さくら サクラ,葵 アオイ,結衣 ユイ,"
    "陽菜 ヒナ,愛 アイ,真由美 マユミ,由美子 ユミコ,洋子 ヨウコ,幸子 サチコ,和子 カズコ,久美子 クミコ,"
    "京子 キョウコ,直美 ナオミ,明美 アケミ,智子 トモコ,順子 ジュンコ,節子 セツコ,典子 ノリコ,"
    "美穂 ミホ,彩 アヤ,舞 マイ,優子 ユウコ,千尋 チヒロ,結菜 ユイナ,芽依 メイ,凛 リン,"
    "美月 ミヅキ,七海 ナナミ,楓 カエデ,遥 ハルカ,菜々子 ナナコ,里美 サトミ,理恵 リエ,"
    "加奈子 カナコ,友美 トモミ,麻衣 マイ,沙織 サオリ,香織 カオリ,亜希子 アキコ,紀子 ノリコ"
)
# Pieces of generated surnames (the long tail beyond the national top 150).
_HEADS = (
    "山ヤマ 川カワ 田タ 中ナカ 村ムラ 木キ 野ノ 本モト 井イ 藤フジ 原ハラ 島シマ 沢サワ 岡オカ 松マツ "
    "石イシ 林ハヤシ 森モリ 池イケ 橋ハシ 上ウエ 下シモ 大オオ 小コ 高タカ 西ニシ 東ヒガシ 北キタ "
    "南ミナミ 前マエ 後ゴ 清キヨ 長ナガ 浅アサ 深フカ 竹タケ 梅ウメ 桜サクラ 菊キク 堀ホリ 宮ミヤ 福フク "
    "吉ヨシ 今イマ 新シン 古フル 平ヒラ 白シロ 黒クロ 赤アカ 青アオ 金カネ 銀ギン 鈴スズ 永ナガ 秋アキ"
)
_TAILS = (
    "田ダ 川カワ 山ヤマ 本モト 村ムラ 野ノ 井イ 木キ 島ジマ 沢ザワ 原ハラ 崎サキ 口グチ 内ウチ 谷タニ "
    "部ベ 藤トウ 瀬セ 浦ウラ 岡オカ 尾オ 坂サカ 橋ハシ 林バヤシ 森モリ 江エ 辺ベ 屋ヤ 倉クラ 塚ツカ"
)
_PREFS = (
    "東京都 千代田区,東京都 世田谷区,東京都 練馬区,神奈川県 横浜市港北区,神奈川県 川崎市中原区,"
    "大阪府 大阪市北区,大阪府 堺市堺区,愛知県 名古屋市中区,北海道 札幌市中央区,福岡県 福岡市博多区,"
    "埼玉県 さいたま市浦和区,千葉県 千葉市中央区,兵庫県 神戸市中央区,京都府 京都市左京区,"
    "宮城県 仙台市青葉区,広島県 広島市中区,静岡県 浜松市中区,新潟県 新潟市中央区,岡山県 岡山市北区,"
    "熊本県 熊本市中央区,鹿児島県 鹿児島市,沖縄県 那覇市,長野県 長野市,群馬県 前橋市"
)
_TOWN_HEADS = "大小上下東西南北新元本中若旭栄桜緑青柳松"
_TOWN_TAILS = "町台丘原野田川山浜崎島沢里森谷橋"
# Pieces of generated given names (the long tail: the most common given name is ~1%).
_GIVEN_HEADS = "健ケン 翔ショウ 大ダイ 悠ユウ 陽ヨウ 優ユウ 和カズ 正マサ 秀ヒデ 光ミツ 英エイ 浩コウ 俊シュン 拓タク 達タツ 哲テツ 康コウ 直ナオ 智トモ 誠セイ"
_GIVEN_MALE_TAILS = (
    "太タ 人ト 斗ト 介スケ 輔スケ 樹キ 也ヤ 男オ 郎ロウ 一イチ 平ヘイ 吾ゴ 志シ 彦ヒコ 司ジ"
)
_GIVEN_FEMALE_TAILS = "子コ 美ミ 香カ 奈ナ 恵エ 代ヨ 江エ 乃ノ 華カ 菜ナ 花カ 里リ 絵エ 穂ホ 音ネ"


def _pairs(text: str, sep: str = " ") -> list[tuple[str, str]]:
    out = []
    for item in text.replace("\n", "").split("," if sep == " " else " "):
        item = item.strip()
        if not item:
            continue
        if sep == " ":
            kanji, kana = item.split(" ")
        else:
            split = next(i for i, ch in enumerate(item) if "\u30a0" <= ch <= "\u30ff")
            kanji, kana = item[:split], item[split:]
        out.append((kanji, kana))
    return out


@dataclass
class Person:
    pid: int
    family: str
    family_kana: str
    given: str
    given_kana: str
    sex: str
    birth: tuple[int, int, int]
    postal: str
    address: str
    insurance: str  # 保険者番号-記号-番号-枝番
    kind: str = "plain"  # plain | homonym | twin


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        top = [(k, r, c) for k, r, c in surnames()]
        top_total = sum(c for _, _, c in top)
        heads, tails = _pairs(_HEADS, sep=""), _pairs(_TAILS, sep="")
        tail = []
        for i, (hk, hr) in enumerate(heads):
            for j, (tk, tr) in enumerate(tails):
                if hk == tk:
                    continue
                # Zipf-like weights for the long tail, 68% of the population in all
                tail.append((hk + tk, hr + tr, 1.0 / (1 + (i * len(tails) + j) % 997) ** 0.6))
        tail_total = sum(w for *_, w in tail)
        self.surnames = [(k, r) for k, r, _ in top] + [(k, r) for k, r, _ in tail]
        self.surname_weights = [0.32 * c / top_total for _, _, c in top] + [
            0.68 * w / tail_total for *_, w in tail
        ]
        gheads = _pairs(_GIVEN_HEADS, sep="")
        self.male, self.male_w = self._given_table(
            _pairs(_MALE), gheads, _pairs(_GIVEN_MALE_TAILS, sep="")
        )
        self.female, self.female_w = self._given_table(
            _pairs(_FEMALE), gheads, _pairs(_GIVEN_FEMALE_TAILS, sep="")
        )
        self.places = [p.split(" ") for p in _PREFS.split(",")]
        self.towns = [h + t for h in _TOWN_HEADS for t in _TOWN_TAILS]
        self.insurers = [
            f"{self.rng.randrange(1, 48):02d}{self.rng.randrange(10**6):06d}" for _ in range(3000)
        ]
        self._postal: dict[tuple[int, int, int], str] = {}
        self._serial = 0
        self.inverse_variants: dict[str, list[str]] = {}
        for variant, standard in variant_table().items():
            self.inverse_variants.setdefault(standard, []).append(variant)

    @staticmethod
    def _given_table(
        listed: list[tuple[str, str]], heads: list[tuple[str, str]], tails: list[tuple[str, str]]
    ) -> tuple[list[tuple[str, str]], list[float]]:
        # listed names: 40% of people, the top one ~1%; generated combinations: the rest
        names = list(listed)
        weights = [1.0 / (i + 1) ** 0.5 for i in range(len(listed))]
        scale = 0.4 / sum(weights)
        weights = [w * scale for w in weights]
        combos = [(hk + tk, hr + tr) for hk, hr in heads for tk, tr in tails]
        combo_w = [1.0 / (1 + i % 97) ** 0.5 for i in range(len(combos))]
        scale = 0.6 / sum(combo_w)
        return names + combos, weights + [w * scale for w in combo_w]

    # -- people --------------------------------------------------------------------------

    def _given(self, sex: str) -> tuple[str, str]:
        names, weights = (self.male, self.male_w) if sex == "m" else (self.female, self.female_w)
        return self.rng.choices(names, weights)[0]

    def _place(self) -> tuple[str, str]:
        r = self.rng
        p, t = r.randrange(len(self.places)), r.randrange(len(self.towns))
        chome, ban, go = r.randrange(1, 9), r.randrange(1, 40), r.randrange(1, 30)
        # one postal code per 町丁目, sharing its first three digits within a city
        postal = self._postal.setdefault(
            (p, t, chome), f"{100 + p * 30 + t % 30:03d}{r.randrange(10**4):04d}"
        )
        pref, city = self.places[p]
        return postal, f"{pref}{city}{self.towns[t]}{chome}丁目{ban}番{go}号"

    def _insurance(self) -> str:
        r = self.rng
        self._serial += 1
        return f"{r.choice(self.insurers)}-{r.randrange(1, 9999)}-{self._serial}-01"

    def person(self, pid: int) -> Person:
        r = self.rng
        family, family_kana = r.choices(self.surnames, self.surname_weights)[0]
        sex = r.choice("mf")
        given, given_kana = self._given(sex)
        birth = (r.randrange(1930, 2021), r.randrange(1, 13), r.randrange(1, 29))
        postal, address = self._place()
        return Person(
            pid,
            family,
            family_kana,
            given,
            given_kana,
            sex,
            birth,
            postal,
            address,
            self._insurance(),
        )

    def homonym(self, pid: int, of: Person) -> Person:
        """A different person with the same (common) name, sex and birth date."""
        postal, address = self._place()
        return replace(
            of, pid=pid, postal=postal, address=address, insurance=self._insurance(), kind="homonym"
        )

    def twin(self, pid: int, of: Person) -> Person:
        sex = self.rng.choice("mf")
        given, given_kana = self._given(sex)
        while given == of.given:
            given, given_kana = self._given(sex)
        insurance = of.insurance.rsplit("-", 1)[0] + "-02"
        return replace(
            of,
            pid=pid,
            given=given,
            given_kana=given_kana,
            sex=sex,
            insurance=insurance,
            kind="twin",
        )

    def population(self, size: int) -> list[Person]:
        people: list[Person] = []
        common = [p for p in self.surnames[:20]]
        while len(people) < size:
            pid = len(people)
            roll = self.rng.random()
            base = self.person(pid)
            people.append(base)
            if roll < 0.02 and len(people) + 3 <= size:
                # 2–4 different people with a common name + the same birth date
                base.family, base.family_kana = self.rng.choice(common)
                sex_names = self.male[:8] if base.sex == "m" else self.female[:8]
                base.given, base.given_kana = self.rng.choice(sex_names)
                base.kind = "homonym"
                for _ in range(self.rng.randrange(1, 4)):
                    people.append(self.homonym(len(people), base))
            elif roll < 0.03 and len(people) < size:
                base.kind = "twin"
                people.append(self.twin(len(people), base))
        return people[:size]

    # -- registrations -------------------------------------------------------------------

    def canonical(self, p: Person) -> Identity:
        y, m, d = p.birth
        return Identity(
            family_name=p.family,
            given_name=p.given,
            family_name_kana=p.family_kana,
            given_name_kana=p.given_kana,
            birth_date=f"{y:04d}-{m:02d}-{d:02d}",
            sex="male" if p.sex == "m" else "female",
            postal_code=f"{p.postal[:3]}-{p.postal[3:]}",
            address=p.address,
            insurance_numbers=(p.insurance,),
            institution_patient_id=f"A{p.pid}",
        )

    def variant(self, p: Person) -> Identity:
        """The same person registered elsewhere, with the noise of real registrations."""
        r = self.rng
        family, family_kana, given, given_kana = p.family, p.family_kana, p.given, p.given_kana
        if p.sex == "f" and r.random() < 0.03:  # married since
            family, family_kana = r.choices(self.surnames, self.surname_weights)[0]
        family, given = self._kanji_noise(family), self._kanji_noise(given)
        family_kana, given_kana = self._kana_noise(family_kana), self._kana_noise(given_kana)
        if r.random() < 0.05:
            family = given = None  # kana only
        if r.random() < 0.08:
            family_kana = given_kana = None
        if r.random() < 0.05 and family is not None:
            family = family + "　"  # a trailing full-width space
        postal, address = p.postal, p.address
        if r.random() < 0.12:  # moved
            postal, address = self._place()
        address_text: str | None = self._address_noise(address)
        postal_text: str | None = self._postal_noise(postal)
        if r.random() < 0.05:
            address_text = None
        if r.random() < 0.03:
            postal_text = None
        insurance: tuple[str, ...] = (self._insurance_noise(p.insurance),)
        roll = r.random()
        if roll < 0.20:  # changed insurer
            insurance = (self._insurance_noise(self._insurance()),)
        elif roll < 0.28:
            insurance = ()
        sex = None if r.random() < 0.03 else ("male" if p.sex == "m" else "female")
        return Identity(
            family_name=family,
            given_name=given,
            family_name_kana=family_kana,
            given_name_kana=given_kana,
            birth_date=self._date_noise(p.birth),
            sex=sex,
            postal_code=postal_text,
            address=address_text,
            insurance_numbers=insurance,
            institution_patient_id=f"B{p.pid}",
        )

    def _kanji_noise(self, text: str) -> str:
        r = self.rng
        if r.random() < 0.15:
            inverse = self.inverse_variants
            text = "".join(
                r.choice(inverse[ch]) if ch in inverse and r.random() < 0.7 else ch for ch in text
            )
        if r.random() < 0.01 and len(text) > 1:  # a wrong kanji
            i = r.randrange(len(text))
            text = text[:i] + r.choice("山川田中村木野本井藤原島") + text[i + 1 :]
        return text

    def _kana_noise(self, text: str) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.10:
            text = text.replace("ウ", "ー") if "ウ" in text[1:] else text.replace("オオ", "オー")
        elif roll < 0.13:
            text = text.replace("ョウ", "ヨウ").replace("ュウ", "ユウ")
        if r.random() < 0.03 and len(text) > 2:  # a typo
            i = r.randrange(1, len(text))
            text = (
                text[:i]
                + r.choice("アイウエオカキクケコサシスセソタチツテトナニヌネノ")
                + text[i + 1 :]
            )
        roll = r.random()
        if roll < 0.15:
            text = jaconv.kata2hira(text)
        elif roll < 0.30:
            text = jaconv.z2h(text, kana=True, ascii=False, digit=False)
        return text

    def _date_noise(self, birth: tuple[int, int, int]) -> str | None:
        r = self.rng
        y, m, d = birth
        roll = r.random()
        if roll < 0.02:
            return None
        if roll < 0.03 and d <= 12 and d != m:
            m, d = d, m
        elif roll < 0.045:
            digits = list(f"{y:04d}{m:02d}{d:02d}")
            i = r.choice([3, 7])
            digits[i] = str((int(digits[i]) + r.randrange(1, 9)) % 10)
            text = "".join(digits)
            y, m, d = int(text[:4]), int(text[4:6]), int(text[6:])
            if not (1 <= m <= 12 and 1 <= d <= 31):
                y, m, d = birth
        style = r.random()
        if style < 0.3:
            era, start = next(
                (e, s) for e, s in (("令和", 2019), ("平成", 1989), ("昭和", 1926)) if y >= s
            )
            n = y - start + 1
            return f"{era}{'元' if n == 1 else n}年{m}月{d}日"
        if style < 0.5:
            return f"{y}/{m}/{d}"
        if style < 0.65:
            return f"{y:04d}{m:02d}{d:02d}"
        if style < 0.75:
            return jaconv.h2z(f"{y}年{m}月{d}日", digit=True)
        return f"{y:04d}-{m:02d}-{d:02d}"

    def _postal_noise(self, postal: str) -> str:
        roll = self.rng.random()
        if roll < 0.3:
            return f"〒{postal[:3]}-{postal[3:]}"
        if roll < 0.5:
            return jaconv.h2z(f"{postal[:3]}－{postal[3:]}", digit=True)
        if roll < 0.7:
            return postal
        return f"{postal[:3]}-{postal[3:]}"

    def _address_noise(self, address: str) -> str:
        r = self.rng
        if r.random() < 0.3:
            match = re.search(r"(\d+)丁目(\d+)番(\d+)号", address)
            if match:
                a, b, c = match.groups()
                address = address[: match.start()] + f"{a}-{b}-{c}"
        if r.random() < 0.2:
            address = address.replace("丁目", "丁目 ").replace("区", "区 ")
        if r.random() < 0.2:
            address = jaconv.h2z(address, digit=True)
        if r.random() < 0.03 and len(address) > 6:
            i = r.randrange(3, len(address))
            address = address[:i] + address[i + 1 :]
        return address

    def _insurance_noise(self, number: str) -> str:
        insurer, symbol, serial, branch = number.split("-")
        roll = self.rng.random()
        if roll < 0.3:
            return f"{insurer} 記号{symbol} 番号{serial} 枝番{branch}"
        if roll < 0.5:
            return jaconv.h2z(f"{insurer}・{symbol}・{serial}・{branch}", digit=True)
        return number


def generate(
    people: int, *, seed: int = 20240601, second_share: float = 0.7
) -> tuple[list[Identity], list[Identity], list[int], list[int], list[str], list[str]]:
    """(A identities, B identities, A person ids, B person ids, A kinds, B kinds)."""
    gen = Generator(seed)
    population = gen.population(people)
    left = [gen.canonical(p) for p in population]
    chosen = [p for p in population if p.kind != "plain" or gen.rng.random() < second_share]
    gen.rng.shuffle(chosen)
    right = [gen.variant(p) for p in chosen]
    return (
        left,
        right,
        [p.pid for p in population],
        [p.pid for p in chosen],
        [p.kind for p in population],
        [p.kind for p in chosen],
    )
