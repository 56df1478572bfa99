"""A dataset from a snapshot of the research store: cohort, flat tables, and the processing its
kind requires.

- **anonymized** (rule 13): no pseudonym, identifier or free text; person ids drawn at random
  for this release; age (top-coded at 90), sex, postal area and the month of first diagnosis
  made k-anonymous (and l-diverse when asked) by the engine over the shipped hierarchies;
  every date of a person rendered at the granularity the engine chose for that person's first
  diagnosis (or shifted by a per-person random offset); codes held by fewer than k persons
  generalized up the ICD-10 hierarchy or suppressed. The k actually released is measured again
  on the output, and a build below the request raises `BuildFailed`: it never ships.
- **pseudonymized** (rule 14): identifiers removed, values kept as they are (rare cases stay),
  person ids a keyed hash of application and pseudonym so follow-up releases join.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

from kiban_anonymizer.domain import hierarchies as h
from kiban_anonymizer.domain.cohort import code_matches, in_period
from kiban_anonymizer.domain.engine import Hierarchy, KAnonymityUnreachable, anonymize
from kiban_anonymizer.domain.privacy import class_figures
from kiban_anonymizer.domain.research import COLUMNS, DATE_COLUMNS, ROW_DATE, TABLE_OF_RESOURCE

SENSITIVE_ATTRIBUTES = ("primary_diagnosis", "deceased")
DateMode = Literal["generalize", "shift"]


class BuildFailed(Exception):
    """The dataset cannot be released. `reason` names the rule, never a value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Person:
    pseudonym: str
    birth_date: date | None
    sex: str
    postal_code: str | None
    deceased_on: date | None


@dataclass(frozen=True)
class Snapshot:
    """The cohort's persons and their rows (`person` = pseudonym, plus the table's columns)."""

    persons: Mapping[str, Person]
    rows: Mapping[str, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class Request:
    kind: Literal["anonymized", "pseudonymized"]
    resources: Sequence[str]
    condition_codes: Sequence[str] = ()
    period_start: date | None = None
    period_end: date | None = None
    k: int = 5
    l: int | None = None  # noqa: E741 — the l of l-diversity
    sensitive: str | None = None


@dataclass(frozen=True)
class Options:
    reference_date: date  # ages are computed at this date
    date_mode: DateMode = "generalize"
    shift_days: int = 180
    suppression_limit: float = 0.02
    method: Literal["auto", "optimal", "local"] = "auto"
    risk_threshold: float = 0.2
    rng: random.Random = field(default_factory=random.SystemRandom)
    # pseudonymized person id (keyed hash of application id + pseudonym)
    stable_id: Callable[[str], str] | None = None


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Dataset:
    tables: list[Table]
    report: dict[str, Any]
    persons: frozenset[str]  # pseudonyms released (to check against purges)
    achieved_k: int | None
    achieved_l: int | None
    suppressed: int


def tables_for(resources: Sequence[str]) -> list[str]:
    """`persons` always, then the event tables the requested resource types map to."""
    tables = ["persons"]
    for resource in resources:
        table = TABLE_OF_RESOURCE.get(resource)
        if table is not None and table not in tables:
            tables.append(table)
    return tables


def row_date(table: str, row: Mapping[str, Any]) -> date | None:
    for column in ROW_DATE[table]:
        value = row.get(column)
        if isinstance(value, date):
            return value
    return None


def cohort_of(
    conditions: Sequence[Mapping[str, Any]],
    persons: Sequence[str],
    request: Request,
) -> list[str]:
    """Persons with a matching condition dated in the period (everyone without patterns)."""
    if not request.condition_codes:
        return sorted(persons)
    known = set(persons)
    chosen = {
        row["person"]
        for row in conditions
        if row["person"] in known
        and code_matches(str(row["code"]), request.condition_codes)
        and in_period(row_date("conditions", row), request.period_start, request.period_end)
    }
    return sorted(chosen)


def build(snapshot: Snapshot, request: Request, options: Options) -> Dataset:
    if request.kind == "pseudonymized":
        return _pseudonymized(snapshot, request, options)
    return _anonymized(snapshot, request, options)


def _rows_in_period(snapshot: Snapshot, table: str, request: Request) -> list[Mapping[str, Any]]:
    return [
        row
        for row in snapshot.rows.get(table, ())
        if row["person"] in snapshot.persons
        and in_period(row_date(table, row), request.period_start, request.period_end)
    ]


# --- pseudonymized ---------------------------------------------------------------------------


def _pseudonymized(snapshot: Snapshot, request: Request, options: Options) -> Dataset:
    if options.stable_id is None:
        raise ValueError("a pseudonymized build needs a stable id function")
    ids = {p: options.stable_id(p) for p in snapshot.persons}
    persons = sorted(snapshot.persons.values(), key=lambda p: ids[p.pseudonym])
    tables = [
        Table(
            "persons",
            ["person_id", "birth_date", "sex", "postal_code", "deceased_on"],
            [
                [ids[p.pseudonym], p.birth_date, p.sex, p.postal_code, p.deceased_on]
                for p in persons
            ],
        )
    ]
    for name in tables_for(request.resources)[1:]:
        columns = list(COLUMNS[name])
        rows = [
            [ids[row["person"]], *(row.get(c) for c in columns)]
            for row in _rows_in_period(snapshot, name, request)
        ]
        rows.sort(key=_sort_key)
        tables.append(Table(name, ["person_id", *columns], rows))
    keys = [(str(p.birth_date), p.sex, p.postal_code or h.UNKNOWN) for p in persons]
    figures = class_figures(keys, threshold=options.risk_threshold)
    report: dict[str, Any] = {
        "kind": "pseudonymized",
        "persons": len(persons),
        "requested": {"k": request.k, "l": request.l, "sensitive": request.sensitive},
        "processing": "identifiers and identification codes removed; values kept, not generalized",
        "quasi_identifiers": ["birth_date", "sex", "postal_code"],
        # informational: a pseudonymized dataset keeps rare values, so k is not enforced
        "measured": figures.to_dict(options.risk_threshold),
        "suppressed": {"persons": 0, "rows": 0},
        "rows": {t.name: len(t.rows) for t in tables},
    }
    return Dataset(tables, report, frozenset(snapshot.persons), None, None, 0)


# --- anonymized ------------------------------------------------------------------------------


def _first_diagnoses(
    conditions: Sequence[Mapping[str, Any]], request: Request
) -> dict[str, tuple[date | None, str]]:
    """Per person: date and code of the first cohort-defining diagnosis (any, without patterns)."""
    first: dict[str, tuple[date | None, str]] = {}
    for row in conditions:
        code = str(row["code"])
        if request.condition_codes and not code_matches(code, request.condition_codes):
            continue
        when = row_date("conditions", row)
        person = row["person"]
        current = first.get(person)
        if current is None or (when is not None and (current[0] is None or when < current[0])):
            first[person] = (when, code)
    return first


def _rare_levels(codes_by_person: Mapping[str, set[str]], k: int) -> dict[str, int | None]:
    """For each ICD-10 code, the lowest hierarchy level whose group holds at least k persons
    (None: even the chapter is rarer than k, so the code is suppressed)."""
    levels = {code: h.icd10_levels(code) for codes in codes_by_person.values() for code in codes}
    depth = 4  # code, category, block, chapter (level 4 is "*", never released as a code)
    holders: list[dict[str, set[str]]] = [defaultdict(set) for _ in range(depth)]
    for person, codes in codes_by_person.items():
        for code in codes:
            for level in range(depth):
                holders[level][levels[code][level]].add(person)
    chosen: dict[str, int | None] = {}
    for code, labels in levels.items():
        chosen[code] = next(
            (
                level
                for level in range(depth)
                if labels[level] != h.TOP and len(holders[level][labels[level]]) >= k
            ),
            None,
        )
    return chosen


def _granularity(label: str, mode: DateMode) -> str:
    if mode == "shift":
        return "shift"
    if label == h.UNKNOWN:
        return "month"
    if len(label) == 7:
        return "month"
    if len(label) == 4:
        return "year"
    if len(label) == 9 and label[4] == "-":
        return "span"
    return "none"


def _render(day: date | None, granularity: str, offset: int) -> str | None:
    if day is None:
        return None
    if granularity == "shift":
        return (day + timedelta(days=offset)).isoformat()
    if granularity == "month":
        return f"{day.year:04d}-{day.month:02d}"
    if granularity == "year":
        return f"{day.year:04d}"
    if granularity == "span":
        return h.year_span(day.year)
    return None


def _anonymized(snapshot: Snapshot, request: Request, options: Options) -> Dataset:
    k = request.k
    pseudonyms = sorted(snapshot.persons)
    if len(pseudonyms) < k:
        raise BuildFailed(f"the cohort has fewer persons than k={k}")
    sensitive = request.sensitive or ("primary_diagnosis" if request.l else None)
    if request.l and sensitive not in SENSITIVE_ATTRIBUTES:
        raise BuildFailed(f"sensitive attribute must be one of {', '.join(SENSITIVE_ATTRIBUTES)}")
    conditions = _rows_in_period(snapshot, "conditions", request)
    first = _first_diagnoses(conditions, request)

    # Primary diagnosis (3-character category of the first cohort diagnosis), rare ones raised.
    primary_codes = {p: {h.icd10_category(first[p][1])} for p in pseudonyms if p in first}
    primary_levels = _rare_levels(primary_codes, k)
    primary: dict[str, str] = {}
    for p in pseudonyms:
        if p not in first:
            primary[p] = h.UNKNOWN
            continue
        category = h.icd10_category(first[p][1])
        level = primary_levels[category]
        primary[p] = h.TOP if level is None else h.icd10_levels(category)[level]

    ages = [h.age_at(snapshot.persons[p].birth_date, options.reference_date) for p in pseudonyms]
    sexes = [snapshot.persons[p].sex for p in pseudonyms]
    postals = [h.postal_area(snapshot.persons[p].postal_code) for p in pseudonyms]
    dx = [_dx_value(first.get(p, (None, ""))[0], options.date_mode) for p in pseudonyms]
    columns: dict[str, list[str]] = {
        "age": ages,
        "sex": sexes,
        "postal_area": postals,
        "first_diagnosis": dx,
    }
    qi = list(columns)
    hierarchies = {
        "age": Hierarchy.from_rows(h.age_rows(ages)),
        "sex": Hierarchy.from_rows(h.sex_rows(sexes)),
        "postal_area": Hierarchy.from_rows(h.postal_area_rows(postals)),
        "first_diagnosis": Hierarchy.from_rows(
            h.month_rows(dx) if options.date_mode == "generalize" else h.year_rows(dx)
        ),
    }
    deceased = ["true" if snapshot.persons[p].deceased_on else "false" for p in pseudonyms]
    sensitive_values = {"primary_diagnosis": [primary[p] for p in pseudonyms], "deceased": deceased}
    if sensitive:
        columns[sensitive] = sensitive_values[sensitive]
    try:
        result = anonymize(
            columns,
            qi=qi,
            hierarchies=hierarchies,
            k=k,
            l=request.l,
            sensitive=sensitive if request.l else None,
            suppression_limit=options.suppression_limit,
            method=options.method,
            risk_threshold=options.risk_threshold,
        )
    except KAnonymityUnreachable:
        raise BuildFailed(
            f"k={k}" + (f", l={request.l}" if request.l else "") + " cannot be reached within "
            f"the suppression limit {options.suppression_limit}"
        ) from None

    kept = [i for i, suppressed in enumerate(result.suppressed) if not suppressed]
    released = [pseudonyms[i] for i in kept]
    keys = [tuple(str(result.columns[q][i]) for q in qi) for i in kept]
    figures = class_figures(
        keys,
        sensitive=[sensitive_values[sensitive][i] for i in kept]
        if request.l and sensitive
        else None,
        threshold=options.risk_threshold,
    )
    if not released or figures.k < k:
        raise BuildFailed(f"achieved k={figures.k} is below the requested k={k}")
    if request.l and (figures.l is None or figures.l < request.l):
        raise BuildFailed(f"achieved l={figures.l} is below the requested l={request.l}")

    # Random ids for this release only; rows in the order of those ids (not of pseudonyms).
    ids: dict[str, str] = {}
    for p in released:
        ids[p] = f"{options.rng.getrandbits(96):024x}"
    granularity = {
        pseudonyms[i]: _granularity(str(result.columns["first_diagnosis"][i]), options.date_mode)
        for i in kept
    }
    offsets = {
        p: options.rng.randint(-options.shift_days, options.shift_days)
        if options.date_mode == "shift"
        else 0
        for p in released
    }
    position = {p: i for i, p in enumerate(pseudonyms)}
    person_rows = []
    for p in released:
        i = position[p]
        person = snapshot.persons[p]
        person_rows.append(
            [
                ids[p],
                result.columns["age"][i],
                result.columns["sex"][i],
                result.columns["postal_area"][i],
                result.columns["first_diagnosis"][i],
                primary[p],
                deceased[i],
                _render(person.deceased_on, granularity[p], offsets[p]),
            ]
        )
    person_rows.sort(key=_sort_key)
    tables = [
        Table(
            "persons",
            [
                "person_id",
                "age",
                "sex",
                "postal_area",
                "first_diagnosis",
                "primary_diagnosis",
                "deceased",
                "death_date",
            ],
            person_rows,
        )
    ]
    release_set = set(released)
    rare_generalized = 0
    rare_suppressed_rows = 0
    for name in tables_for(request.resources)[1:]:
        rows = [r for r in _rows_in_period(snapshot, name, request) if r["person"] in release_set]
        table, generalized, dropped = _event_table(name, rows, ids, granularity, offsets, k)
        rare_generalized += generalized
        rare_suppressed_rows += dropped
        tables.append(table)

    suppressed_persons = len(pseudonyms) - len(released)
    report: dict[str, Any] = {
        "kind": "anonymized",
        "cohort_persons": len(pseudonyms),
        "persons": len(released),
        "requested": {"k": k, "l": request.l, "sensitive": sensitive if request.l else None},
        "achieved": {"k": figures.k, "l": figures.l},
        "quasi_identifiers": qi,
        "method": result.method_used,
        "suppressed": {
            "persons": suppressed_persons,
            "rows": suppressed_persons,
            "rare_code_rows": rare_suppressed_rows,
        },
        "rare_codes_generalized": rare_generalized,
        "dates": {"mode": options.date_mode, "shift_days": options.shift_days}
        if options.date_mode == "shift"
        else {"mode": "generalize"},
        "top_coding": {"age": f"{h.AGE_TOP_CODE}+"},
        "measured": figures.to_dict(options.risk_threshold),
        "engine": result.report.to_dict(),
        "rows": {t.name: len(t.rows) for t in tables},
    }
    report["information_loss"] = _information_loss(report["engine"])
    return Dataset(tables, report, frozenset(released), figures.k, figures.l, suppressed_persons)


def _event_table(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    ids: Mapping[str, str],
    granularity: Mapping[str, str],
    offsets: Mapping[str, int],
    k: int,
) -> tuple[Table, int, int]:
    """One event table with rare codes raised or dropped and dates rendered per person."""
    code_column = "class_code" if name == "encounters" else "code"
    holders: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        holders[(str(row.get("code_system")), str(row.get(code_column)))].add(row["person"])
    icd_levels: dict[str, int | None] = {}
    if name == "conditions":
        by_person: dict[str, set[str]] = defaultdict(set)
        for row in rows:
            if row.get("code_system") == "icd10":
                by_person[row["person"]].add(str(row["code"]))
        icd_levels = _rare_levels(by_person, k)
    columns = list(COLUMNS[name])
    dates = set(DATE_COLUMNS[name])
    out: list[list[Any]] = []
    generalized: set[str] = set()
    dropped = 0
    for row in rows:
        person = row["person"]
        code = str(row.get(code_column))
        values = dict(row)
        if name == "conditions" and row.get("code_system") == "icd10":
            level = icd_levels.get(code)
            if level is None:
                dropped += 1
                continue
            if level > 0:
                generalized.add(code)
                values["code"] = h.icd10_levels(code)[level]
        elif len(holders[(str(row.get("code_system")), code)]) < k:
            dropped += 1
            continue
        rendered = [
            _render(values.get(c), granularity[person], offsets[person])
            if c in dates
            else values.get(c)
            for c in columns
        ]
        out.append([ids[person], *rendered])
    out.sort(key=_sort_key)
    return Table(name, ["person_id", *columns], out), len(generalized), dropped


def _sort_key(row: Sequence[Any]) -> tuple[str, ...]:
    return tuple("" if v is None else str(v) for v in row)


def _dx_value(when: date | None, mode: DateMode) -> str:
    if when is None:
        return h.UNKNOWN
    return f"{when.year:04d}-{when.month:02d}" if mode == "generalize" else f"{when.year:04d}"


def _information_loss(engine: Mapping[str, Any]) -> dict[str, Any]:
    """GCP and discernibility as the engine measured them (names vary by engine version)."""
    out: dict[str, Any] = {}
    for wanted, names in (
        ("gcp", ("gcp", "ncp", "information_loss")),
        ("discernibility", ("discernibility", "dm")),
    ):
        for name in names:
            if name in engine:
                out[wanted] = engine[name]
                break
    return out
