"""Synthetic patients for `kiban demo` (fixed seed: every run makes the same people).

Made-up Japanese persons with kanji and kana names, birth dates, postal codes and insurance
numbers. Some are seen at both demo institutions under different local ids and written
differently there (half-width kana, hiragana, a variant kanji), as real registries do. Most
have a heart-failure diagnosis (ICD-10 I50.x) so that a k = 5 anonymized dataset of the
heart-failure cohort can be built. Nothing here describes a real person.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

SEED = 20261121

JP_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
JP_PATIENT_ID_OID = "urn:oid:1.2.392.100495.20.3.51.1"  # + the 10-digit institution code
JP_INSURANCE_SYSTEM = "urn:oid:1.2.392.100495.20.3.61"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
LOINC = "http://loinc.org"


@dataclass(frozen=True)
class Institution:
    code: str
    name: str
    kind: str
    prefix: str  # local patient ids look like `<prefix>-00012`


INSTITUTIONS = (
    Institution("1310000001", "基盤記念病院 (demo)", "hospital", "KH"),
    Institution("1320000002", "さくら内科クリニック (demo)", "clinic", "SC"),
)

# (kanji, kana, variant kanji written at the second institution or None)
_FAMILIES = [
    ("佐藤", "サトウ", None),
    ("鈴木", "スズキ", None),
    ("高橋", "タカハシ", "髙橋"),
    ("田中", "タナカ", None),
    ("伊藤", "イトウ", None),
    ("渡辺", "ワタナベ", "渡邊"),
    ("山本", "ヤマモト", None),
    ("中村", "ナカムラ", None),
    ("小林", "コバヤシ", None),
    ("加藤", "カトウ", None),
    ("吉田", "ヨシダ", None),
    ("山口", "ヤマグチ", None),
    ("斎藤", "サイトウ", "齋藤"),
    ("松本", "マツモト", None),
    ("井上", "イノウエ", None),
    ("木村", "キムラ", None),
    ("山崎", "ヤマザキ", "山﨑"),
    ("清水", "シミズ", None),
    ("森", "モリ", None),
    ("池田", "イケダ", None),
]
_GIVEN_MALE = [
    ("太郎", "タロウ"),
    ("健一", "ケンイチ"),
    ("誠", "マコト"),
    ("浩", "ヒロシ"),
    ("隆", "タカシ"),
    ("茂", "シゲル"),
    ("修", "オサム"),
    ("大輔", "ダイスケ"),
    ("和夫", "カズオ"),
    ("正人", "マサト"),
]
_GIVEN_FEMALE = [
    ("花子", "ハナコ"),
    ("洋子", "ヨウコ"),
    ("恵子", "ケイコ"),
    ("幸子", "サチコ"),
    ("和子", "カズコ"),
    ("裕子", "ユウコ"),
    ("直美", "ナオミ"),
    ("明美", "アケミ"),
    ("久美子", "クミコ"),
    ("節子", "セツコ"),
]
# Postal code → an address (synthetic street numbers); two areas so postal areas repeat.
_PLACES = [
    ("100-0005", "東京都千代田区丸の内"),
    ("160-0022", "東京都新宿区新宿"),
    ("170-0013", "東京都豊島区東池袋"),
    ("113-0033", "東京都文京区本郷"),
    ("150-0002", "東京都渋谷区渋谷"),
]

HEART_FAILURE_CODES = ("I50.0", "I50.1", "I50.9")
OTHER_CODES = ("I10", "E11.9", "N18.3")  # hypertension, type 2 diabetes, CKD stage 3


@dataclass
class Person:
    """One synthetic person as the world knows them (not as any one institution writes them)."""

    number: int
    family_name: str
    given_name: str
    family_name_kana: str
    given_name_kana: str
    family_variant: str | None
    birth_date: date
    sex: str
    postal_code: str
    address: str
    insurance_number: str
    heart_failure: str | None  # ICD-10 code, or None
    comorbidity: str | None
    diagnosed_on: date
    # institution code → the local patient id there
    local_ids: dict[str, str] = field(default_factory=dict)
    # institution code → how that institution writes the person (for the summary)
    spelling: dict[str, str] = field(default_factory=dict)

    @property
    def at_both(self) -> bool:
        return len(self.local_ids) == 2


@dataclass
class DemoData:
    persons: list[Person]
    opted_out: Person
    notice_date: date

    def at(self, code: str) -> list[Person]:
        return [p for p in self.persons if code in self.local_ids_of(p)]

    @staticmethod
    def local_ids_of(person: Person) -> dict[str, str]:
        return person.local_ids

    @property
    def records(self) -> int:
        return sum(len(p.local_ids) for p in self.persons)

    @property
    def heart_failure_persons(self) -> list[Person]:
        return [p for p in self.persons if p.heart_failure]


def half_width_kana(text: str) -> str:
    """Full-width katakana → half-width (ｻﾄｳ), as older systems store it."""
    out = []
    for ch in text:
        decomposed = unicodedata.normalize("NFD", ch)
        base, marks = decomposed[0], decomposed[1:]
        half = _HALF.get(base, base)
        for mark in marks:
            half += {"\u3099": "ﾞ", "\u309a": "ﾟ"}.get(mark, mark)
        out.append(half)
    return "".join(out)


def hiragana(text: str) -> str:
    return "".join(chr(ord(c) - 0x60) if "ァ" <= c <= "ヶ" else c for c in text)


_FULL = (
    "ァアィイゥウェエォオカキクケコサシスセソタチッツテトナニヌネノ"
    "ハヒフヘホマミムメモャヤュユョヨラリルレロワヲンー"
)
_HALF_CHARS = "ｧｱｨｲｩｳｪｴｫｵｶｷｸｹｺｻｼｽｾｿﾀﾁｯﾂﾃﾄﾅﾆﾇﾈﾉﾊﾋﾌﾍﾎﾏﾐﾑﾒﾓｬﾔｭﾕｮﾖﾗﾘﾙﾚﾛﾜｦﾝｰ"
_HALF = dict(zip(_FULL, _HALF_CHARS, strict=True))


def generate(today: date, *, persons: int = 48, seed: int = SEED) -> DemoData:
    """`persons` synthetic people: 5 in 6 with heart failure, one in three seen at both
    institutions (written differently there), everyone notified 60 days before `today`."""
    rng = random.Random(seed)  # noqa: S311 — synthetic data, reproducible on purpose
    names: set[tuple[str, str]] = set()
    people: list[Person] = []
    first, second = INSTITUTIONS
    for n in range(1, persons + 1):
        sex = "male" if n % 2 else "female"
        while True:
            family = rng.choice(_FAMILIES)
            given = rng.choice(_GIVEN_MALE if sex == "male" else _GIVEN_FEMALE)
            if (family[0], given[0]) not in names:
                names.add((family[0], given[0]))
                break
        postal, town = rng.choice(_PLACES)
        birth = date(1938, 1, 1) + timedelta(days=rng.randrange(0, 365 * 40))
        hf = rng.choice(HEART_FAILURE_CODES) if n % 6 else None
        person = Person(
            number=n,
            family_name=family[0],
            given_name=given[0],
            family_name_kana=family[1],
            given_name_kana=given[1],
            family_variant=family[2],
            birth_date=birth,
            sex=sex,
            postal_code=postal,
            address=f"{town}{rng.randint(1, 4)}-{rng.randint(1, 20)}-{rng.randint(1, 30)}",
            insurance_number=f"{rng.randrange(10**7, 10**8)}",
            heart_failure=hf,
            comorbidity=rng.choice(OTHER_CODES) if rng.random() < 0.6 else None,
            diagnosed_on=date(2023, 1, 1) + timedelta(days=rng.randrange(0, 600)),
        )
        person.local_ids[first.code] = f"{first.prefix}-{n:05d}"
        if n % 3 == 0:
            person.local_ids[second.code] = f"{second.prefix}-{7000 + n * 7}"
        people.append(person)
    # The second institution also sees a few people the first never did.
    for person in people[-6:]:
        if not person.at_both:
            person.local_ids.pop(first.code)
            person.local_ids[second.code] = f"{second.prefix}-{7000 + person.number * 7}"
    # The person who opts out: seen at both, with heart failure, written in half-width kana
    # at the second institution.
    opted_out = next(p for p in people if p.at_both and p.heart_failure)
    return DemoData(people, opted_out, notice_date=today - timedelta(days=60))


def written_at(person: Person, data: DemoData, code: str) -> dict[str, str]:
    """How `code` writes the person: the second institution uses its own conventions."""
    family, given = person.family_name, person.given_name
    family_kana, given_kana = person.family_name_kana, person.given_name_kana
    if code == INSTITUTIONS[1].code and person.at_both:
        style = (person.number // 3) % 3
        if person is data.opted_out or (style == 0 and not person.family_variant):
            family_kana, given_kana = half_width_kana(family_kana), half_width_kana(given_kana)
            person.spelling[code] = "half-width kana"
        elif person.family_variant:
            family = person.family_variant
            person.spelling[code] = "variant kanji"
        else:
            family_kana, given_kana = hiragana(family_kana), hiragana(given_kana)
            person.spelling[code] = "hiragana"
    return {
        "family_name": family,
        "given_name": given,
        "family_name_kana": family_kana,
        "given_name_kana": given_kana,
    }


def patient_resource(person: Person, data: DemoData, code: str) -> dict[str, Any]:
    """A JP Core Patient as the institution `code` sends it."""
    names = written_at(person, data, code)
    local_id = person.local_ids[code]
    return {
        "resourceType": "Patient",
        "id": f"pt-{local_id}",
        "meta": {"profile": ["http://jpfhir.jp/fhir/core/StructureDefinition/JP_Patient"]},
        "identifier": [
            {"system": f"{JP_PATIENT_ID_OID}{code}", "value": local_id},
            {"system": JP_INSURANCE_SYSTEM, "value": person.insurance_number},
        ],
        "name": [
            {
                "extension": [{"url": JP_REPRESENTATION, "valueCode": "IDE"}],
                "use": "official",
                "text": f"{names['family_name']} {names['given_name']}",
                "family": names["family_name"],
                "given": [names["given_name"]],
            },
            {
                "extension": [{"url": JP_REPRESENTATION, "valueCode": "SYL"}],
                "use": "official",
                "text": f"{names['family_name_kana']} {names['given_name_kana']}",
                "family": names["family_name_kana"],
                "given": [names["given_name_kana"]],
            },
        ],
        "gender": person.sex,
        "birthDate": person.birth_date.isoformat(),
        "address": [{"text": person.address, "postalCode": person.postal_code, "country": "JP"}],
    }


def _condition(ref: str, rid: str, code: str, onset: date) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": ICD10, "code": code}]},
        "subject": {"reference": ref},
        "onsetDateTime": onset.isoformat(),
        "recordedDate": onset.isoformat(),
    }


def _observation(
    ref: str, rid: str, loinc: str, value: float, unit: str, on: date
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "subject": {"reference": ref},
        "effectiveDateTime": f"{on.isoformat()}T10:00:00+09:00",
        "valueQuantity": {
            "value": value,
            "unit": unit,
            "system": "http://unitsofmeasure.org",
            "code": unit,
        },
    }


def clinical_resources(person: Person, code: str, seed: int = SEED) -> list[dict[str, Any]]:
    """What `code` recorded about the person: diagnoses, BNP, heart rate and body weight."""
    rng = random.Random(f"{seed}/{person.number}/{code}")  # noqa: S311 — synthetic data
    local_id = person.local_ids[code]
    ref = f"Patient/pt-{local_id}"
    first_site = code == INSTITUTIONS[0].code or not person.at_both
    seen = person.diagnosed_on + (timedelta(days=0) if first_site else timedelta(days=45))
    out: list[dict[str, Any]] = []
    if person.heart_failure:
        out.append(_condition(ref, f"c-{local_id}-hf", person.heart_failure, seen))
    else:
        out.append(_condition(ref, f"c-{local_id}-ht", "I10", seen))
    if person.comorbidity and first_site:
        out.append(_condition(ref, f"c-{local_id}-co", person.comorbidity, seen))
    out.append(
        _observation(
            ref,
            f"o-{local_id}-bnp",
            "30934-4",
            round(rng.uniform(40, 900) if person.heart_failure else rng.uniform(5, 60), 1),
            "pg/mL",
            seen,
        )
    )
    out.append(_observation(ref, f"o-{local_id}-hr", "8867-4", rng.randint(55, 110), "/min", seen))
    out.append(
        _observation(ref, f"o-{local_id}-wt", "29463-7", round(rng.uniform(40, 90), 1), "kg", seen)
    )
    return out


def bundle(data: DemoData, code: str) -> dict[str, Any]:
    """One `batch` bundle with every patient of institution `code` and their records."""
    entries: list[dict[str, Any]] = []
    for person in data.at(code):
        entries.append({"resource": patient_resource(person, data, code)})
        entries.extend({"resource": r} for r in clinical_resources(person, code))
    return {"resourceType": "Bundle", "type": "batch", "entry": entries}


def notices(data: DemoData, code: str) -> dict[str, Any]:
    return {
        "notices": [
            {
                "patient_id": p.local_ids[code],
                "notified_on": data.notice_date.isoformat(),
                "method": "written",
                "guardian_notified": False,
            }
            for p in data.at(code)
        ]
    }


def identifiers(data: DemoData) -> dict[str, set[str]]:
    """Every identifying string of every person, in each way it may be written: what must
    never appear in a released file."""
    found: dict[str, set[str]] = {
        "name": set(),
        "kana": set(),
        "patient id": set(),
        "insurance number": set(),
        "birth date": set(),
        "postal code": set(),
        "address": set(),
    }
    for p in data.persons:
        for fam in filter(None, (p.family_name, p.family_variant)):
            found["name"] |= {fam, p.given_name, f"{fam}{p.given_name}", f"{fam} {p.given_name}"}
        for kana in (p.family_name_kana, p.given_name_kana):
            found["kana"] |= {kana, half_width_kana(kana), hiragana(kana)}
        found["patient id"] |= set(p.local_ids.values())
        found["patient id"] |= {f"pt-{i}" for i in p.local_ids.values()}
        found["insurance number"].add(p.insurance_number)
        b = p.birth_date
        found["birth date"] |= {
            b.isoformat(),
            b.strftime("%Y%m%d"),
            b.strftime("%Y/%m/%d"),
            f"{b.year}/{b.month}/{b.day}",
        }
        found["postal code"] |= {p.postal_code, p.postal_code.replace("-", "")}
        found["address"].add(p.address)
    return found
