"""Model families, found by registered name (as spaCy finds components).

A family is a ``TextClassifier`` subclass with a pydantic ``Params`` model (its constructor takes
``task_type``, ``labels``, ``seed`` and those params). Built-in families are declared once, in
``train.models.catalog``, and registered with ``@register_family(SPEC)``; a plug-in sets ``Params``
itself and registers with ``@model_families.register(name)`` or the ``tagger_model_families``
entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import catalogue
from pydantic import BaseModel

from train.models.catalog import BUILTIN, FamilySpec

model_families = catalogue.create("tagger", "model_families", entry_points=True)


BUILTIN_FAMILIES = BUILTIN  # name -> FamilySpec; a family's module is imported on first use


def register_family(spec: FamilySpec) -> Callable[[type], type]:
    """Class decorator: register a built-in family under ``spec.name``, with ``spec.Params`` as its ``Params``."""

    def decorate(cls: type) -> type:
        cls.Params = spec.Params
        return model_families.register(spec.name)(cls)

    return decorate


def get_family(name: str) -> Any:
    """The family class registered under ``name``; a clear error suggests the closest name."""
    if name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name].module)
    try:
        return model_families.get(name)
    except catalogue.RegistryError:
        known = sorted(set(model_families.get_all()) | set(BUILTIN_FAMILIES))
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ValueError(
            f"model.family: unknown family '{name}'{suggestion} (registered: {', '.join(known)})"
        ) from None


def model_params_schema(name: str) -> type[BaseModel]:
    """The pydantic model that validates ``model.params`` for a family.

    Built-in families' params come from their spec, without importing the family itself.
    """
    if name in BUILTIN_FAMILIES:
        return BUILTIN_FAMILIES[name].Params
    return get_family(name).Params


def family_name(cls: type) -> str:
    """The name ``cls`` is registered under (``ValueError`` for an unregistered class)."""
    for name, registered in model_families.get_all().items():
        if registered is cls:
            return name
    raise ValueError(f"{cls.__name__} is not a registered model family")


def build_model(name: str, task_type: str, labels: list[str], params: dict, seed: int) -> Any:
    """Instantiate a registered family from validated config values."""
    return get_family(name)(task_type=task_type, labels=labels, seed=seed, **params)
