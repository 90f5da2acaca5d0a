"""Model families, found by registered name (as spaCy finds components).

A family is a class with a nested pydantic ``Params`` model and a constructor taking
``task_type``, ``labels``, ``seed`` and those params. Register it with ``@model_families.register``;
plug-ins can also register through the ``tagger_model_families`` entry-point group.
"""

from __future__ import annotations

import difflib
from typing import Any

import catalogue
from pydantic import BaseModel

model_families = catalogue.create("tagger", "model_families", entry_points=True)


def _load_builtin_families() -> None:
    # Importing the modules runs their @register decorators.
    import train.models.tfidf  # noqa: F401


def get_family(name: str) -> Any:
    """The family class registered under ``name``; a clear error suggests the closest name."""
    _load_builtin_families()
    try:
        return model_families.get(name)
    except catalogue.RegistryError:
        known = sorted(model_families.get_all())
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ValueError(
            f"model.family: unknown family '{name}'{suggestion} (registered: {', '.join(known)})"
        ) from None


def model_params_schema(name: str) -> type[BaseModel]:
    """The pydantic model that validates ``model.params`` for a family."""
    return get_family(name).Params


def build_model(name: str, task_type: str, labels: list[str], params: dict, seed: int) -> Any:
    """Instantiate a registered family from validated config values."""
    return get_family(name)(task_type=task_type, labels=labels, seed=seed, **params)
