"""Event contracts: every type's JSON Schema is snapshotted and has a synthetic example.

A change to a published event's schema fails here. Additive, optional fields: regenerate the
snapshot (`KIBAN_UPDATE_SNAPSHOTS=1`) and say so in the commit. Anything a consumer could trip
on (a removed or renamed field, a new required one, a changed type): publish a new `...vN+1`
type instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from kiban_common.events import REGISTRY, Event, EventSpec, decode, encode

HERE = Path(__file__).parent
SPECS = list(REGISTRY)
UPDATE = os.environ.get("KIBAN_UPDATE_SNAPSHOTS") == "1"


def _ids(spec: EventSpec) -> str:
    return spec.type


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_schema_matches_its_snapshot(spec: EventSpec) -> None:
    path = HERE / "schemas" / f"{spec.type}.json"
    current = spec.json_schema()
    if UPDATE:
        path.write_text(json.dumps(current, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    assert path.exists(), f"no snapshot for {spec.type}: run with KIBAN_UPDATE_SNAPSHOTS=1"
    snapshot = json.loads(path.read_text())
    breaking = breaking_changes(snapshot, current)
    assert not breaking, f"{spec.type} changed incompatibly: {breaking}; publish a new version"
    assert snapshot == current, f"{spec.type} changed: regenerate the snapshot if it is additive"


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_synthetic_example_fits_and_survives_the_wire(spec: EventSpec) -> None:
    example = json.loads((HERE / "examples" / f"{spec.type}.json").read_text())
    data = spec.data_model.model_validate(example)
    event = Event(type=spec.type, source="/kiban/contract-test", key="example-key", data=data)
    assert decode(encode(event), spec.data_model) == event


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in `new` would break a consumer written against `old` (properties removed, types
    changed, fields newly required), recursing into nested definitions."""
    found: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in old_props:
        if name not in new_props:
            found.append(f"{path}{name} removed")
        elif old_props[name].get("type") != new_props[name].get("type"):
            found.append(f"{path}{name} changed type")
    for name in set(new.get("required", [])) - set(old.get("required", [])):
        found.append(f"{path}{name} became required")
    for name, definition in old.get("$defs", {}).items():
        if name in new.get("$defs", {}):
            found += breaking_changes(definition, new["$defs"][name], f"{path}{name}.")
    return found


def test_breaking_change_detector_sees_a_removed_and_a_newly_required_field() -> None:
    old = {"properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a"]}
    new = {
        "properties": {"a": {"type": "integer"}, "c": {"type": "string"}},
        "required": ["a", "c"],
    }
    assert sorted(breaking_changes(old, new)) == [
        "a changed type",
        "b removed",
        "c became required",
    ]
