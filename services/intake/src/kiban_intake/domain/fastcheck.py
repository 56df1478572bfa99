"""A fast path in front of `fhir.resources` validation: "certainly valid", or "ask the models".

`fhir.resources` (`fhir_core`) validates a resource by building a pydantic model of every
nested element, running Python validators on each (null checks, choice types, required
primitives): about 80-110 µs for a small Observation, the largest cost of intake. This module
walks the JSON instead, with plans read from the very same model classes:

- every key must be an element (alias) of the model: an unknown key, a `_field` primitive
  extension, `fhir_comments`, a contained resource, `null`, an empty object or list, a list
  where one value is expected (or the reverse) → *unsure*;
- primitive values are checked with a pydantic `TypeAdapter` of the field's own annotated
  type (the same core schema, regex and date parsing the model runs), results for strings
  cached;
- complex elements recurse with their model's plan;
- pydantic-required fields, the model's required primitives (`get_required_fields`) and its
  choice groups (`get_one_of_many_fields`: at most one, one if required) are checked;
- a model with validators or hooks other than `fhir_core`'s standard ones has no plan (unsure).

It never rejects anything and never writes an error message: *unsure* sends the resource to
the full `model_validate`, which stays the only judge of invalid input and names the element.
So the fast path can only be wrong by accepting what the models would refuse; the tests check
it against the models on valid resources and on many mutations of them
(`test_intake_fastcheck.py`).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.types import FhirBase, FhirElementOrResourceBase
from pydantic import BaseModel, TypeAdapter, ValidationError

_STANDARD_VALIDATORS = frozenset(
    {"reject_null_complex_elements", "validate_after_model_construction"}
)
_HOOKS = (
    "__init__",
    "model_validate",
    "reject_null_complex_elements",
    "validate_after_model_construction",
    "_validate_one_of_many",
    "_validate_required_primitive_elements",
)
_CACHE_LIMIT = 200_000


_UNRESOLVED: Any = object()


@dataclass(slots=True)
class _Field:
    is_list: bool
    adapter: TypeAdapter[Any] | None  # a primitive
    model: type[FHIRAbstractModel] | None  # a complex element
    # Strings the adapter accepted (one set per adapter, shared by its fields).
    seen: set[str] = field(default_factory=set)
    plan: Any = _UNRESOLVED  # the model's plan, looked up on first use (None: no plan)


@dataclass(slots=True)
class _Plan:
    resource_type: str
    fields: dict[str, _Field]
    required: tuple[str, ...]
    choices: tuple[tuple[frozenset[str], bool], ...]


_plans: dict[type, _Plan | None] = {}
_adapters: dict[Any, TypeAdapter[Any]] = {}
_seen: dict[int, set[str]] = {}  # by id() of the adapter
_seen_total = 0


def _standard(model: type[FHIRAbstractModel]) -> bool:
    decorators = model.__pydantic_decorators__
    if set(decorators.model_validators) - _STANDARD_VALIDATORS:
        return False
    if decorators.field_validators or decorators.validators or decorators.root_validators:
        return False
    for name in _HOOKS:
        if getattr(model, name, None) is None:
            return False
        base = BaseModel if name == "model_validate" else FHIRAbstractModel
        mine = getattr(model, name)
        if getattr(mine, "__func__", mine) is not getattr(
            getattr(base, name), "__func__", getattr(base, name)
        ):
            return False
    return True


def _unwrap(annotation: Any) -> tuple[bool, Any] | None:
    """(is_list, inner type) of `X | None`, `List[X] | None`; None for anything else."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin in (list, typing.List):  # noqa: UP006 — the models use typing.List
        (inner,) = typing.get_args(annotation)
        if typing.get_origin(inner) in (typing.Union, types.UnionType):
            # List[X | None]: primitive lists keep null placeholders (those are unsure here)
            args = [a for a in typing.get_args(inner) if a is not type(None)]
            if len(args) != 1:
                return None
            inner = args[0]
        if typing.get_origin(inner) in (list, typing.List, typing.Union, types.UnionType):  # noqa: UP006
            return None
        return True, inner
    return False, annotation


def _adapter(inner: Any) -> TypeAdapter[Any]:
    key = repr(inner)
    adapter = _adapters.get(key)
    if adapter is None:
        adapter = _adapters[key] = TypeAdapter(inner)
    return adapter


def _build(model: type[FHIRAbstractModel]) -> _Plan | None:
    if not _standard(model):
        return None
    fields: dict[str, _Field] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if name.endswith("__ext") or alias.startswith("_") or name == "fhir_comments":
            continue  # primitive extensions and comments: unsure when present
        if info.metadata or info.discriminator is not None:
            continue
        unwrapped = _unwrap(info.annotation)
        if unwrapped is None:
            continue
        is_list, inner = unwrapped
        if isinstance(inner, type) and issubclass(inner, FhirBase):
            if issubclass(inner, FhirElementOrResourceBase):
                continue  # contained / nested resources: unsure
            fields[alias] = _Field(is_list, None, inner.get_model_klass())
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            continue
        else:
            adapter = _adapter(inner)
            fields[alias] = _Field(is_list, adapter, None, _seen.setdefault(id(adapter), set()))
    instance = model.model_construct()
    aliases = {name: (info.alias or name) for name, info in model.model_fields.items()}
    required = {aliases[n] for n, info in model.model_fields.items() if info.is_required()}
    required.update(element for element, _ext in instance.get_required_fields())
    choices = tuple(
        (frozenset(aliases[n] for n in names), _choice_required(model, names[0]))
        for names in instance.get_one_of_many_fields().values()
    )
    return _Plan(model.get_resource_type(), fields, tuple(sorted(required)), choices)


def _choice_required(model: type[FHIRAbstractModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return isinstance(extra, Mapping) and extra.get("one_of_many_required") is True


def _plan(model: type[FHIRAbstractModel]) -> _Plan | None:
    try:
        return _plans[model]
    except KeyError:
        plan = _plans[model] = _build(model)
        return plan


def _primitive(value: Any, spec: _Field) -> bool:
    global _seen_total
    adapter = spec.adapter
    assert adapter is not None
    if type(value) is str:
        if value in spec.seen:
            return True
        try:
            adapter.validate_python(value)
        except ValidationError:
            return False
        if _seen_total >= _CACHE_LIMIT:
            for strings in _seen.values():
                strings.clear()  # in place: the fields hold these sets
            _seen_total = 0
        spec.seen.add(value)
        _seen_total += 1
        return True
    if value is None or isinstance(value, dict | list):
        return False
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def _element(value: Any, spec: _Field) -> bool:
    if spec.model is None:
        return _primitive(value, spec)
    plan = spec.plan
    if plan is _UNRESOLVED:
        plan = spec.plan = _plan(spec.model)
    return plan is not None and _valid(value, plan, top=False)


def _valid(value: Any, plan: _Plan, *, top: bool) -> bool:
    if type(value) is not dict or not value:
        return False
    fields = plan.fields
    for key, item in value.items():
        spec = fields.get(key)
        if spec is None:
            if top and key == "resourceType" and item == plan.resource_type:
                continue
            return False
        if spec.is_list:
            if type(item) is not list or not item:
                return False
            for each in item:
                if not _element(each, spec):
                    return False
        elif type(item) is str and item in spec.seen:
            continue  # a string this element's type accepted before (the common case)
        elif not _element(item, spec):
            return False
    for alias in plan.required:
        if alias not in value:
            return False
    for group, required in plan.choices:
        present = len(value.keys() & group)
        if present > 1 or (required and present == 0):
            return False
    return True


def certainly_valid(resource: Mapping[str, Any], model: type[FHIRAbstractModel]) -> bool:
    """True only if `model.model_validate(resource)` would succeed; False means "unsure"."""
    plan = _plan(model)
    return (
        plan is not None
        and resource.get("resourceType") == plan.resource_type
        and _valid(resource, plan, top=True)
    )
