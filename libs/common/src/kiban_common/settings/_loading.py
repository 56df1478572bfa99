"""Building settings so that a wrong or missing value stops the start with the variable's name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from kiban_common.settings._models import KibanSettings

S = TypeVar("S", bound=KibanSettings)

# KIBAN_* variables that are not service settings (the test harness and tool caches).
_NOT_SETTINGS = ("KIBAN_TEST_", "KIBAN_CACHE_DIR", "KIBAN_UPDATE_SNAPSHOTS")


class SettingsError(Exception):
    """Settings could not be built; the message names each offending variable, never a value."""


def load_settings(cls: type[S], /, **overrides: Any) -> S:
    """Build `cls` from the environment plus explicit overrides (which win)."""
    _refuse_unknown_variables(cls, os.environ)
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in error["loc"] if not isinstance(p, int)]
        variable = "KIBAN_" + "__".join(loc).upper() if loc else "settings"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{variable}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def _refuse_unknown_variables(cls: type[KibanSettings], environ: Mapping[str, str]) -> None:
    """A misspelt variable would otherwise be ignored and a default used silently."""
    known = _variable_names(cls, "KIBAN_")
    unknown = sorted(
        name
        for name in environ
        if name.startswith("KIBAN_")
        and not name.startswith(_NOT_SETTINGS)
        and not any(name == k or name.startswith(k + "__") for k in known)
    )
    if unknown:
        raise SettingsError("unknown settings (misspelt?): " + ", ".join(unknown))


def _variable_names(model: type[BaseModel], prefix: str) -> set[str]:
    names = set()
    for field_name, field in model.model_fields.items():
        name = prefix + field_name.upper()
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _variable_names(annotation, name + "__")
    return names
