"""The public names of kiban_common are pinned: removing or renaming one breaks services, so it
must show up here as a deliberate change (regenerate with KIBAN_UPDATE_SNAPSHOTS=1)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

SNAPSHOT = Path(__file__).with_name("public_surface.json")
PACKAGES = [
    "bus",
    "crypto",
    "db",
    "events",
    "outbox",
    "security",
    "service",
    "settings",
    "telemetry",
]


def _surface() -> dict[str, list[str]]:
    return {
        name: sorted(importlib.import_module(f"kiban_common.{name}").__all__) for name in PACKAGES
    }


def test_public_names_match_the_snapshot() -> None:
    current = _surface()
    if os.environ.get("KIBAN_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2) + "\n")
    assert json.loads(SNAPSHOT.read_text()) == current


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_exists(package: str) -> None:
    module = importlib.import_module(f"kiban_common.{package}")
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing
