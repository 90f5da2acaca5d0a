"""Model families, found by registered name (as spaCy finds components).

A family is a class with a nested pydantic ``Params`` model and a constructor taking
``task_type``, ``labels``, ``seed`` and those params. Register it with ``@model_families.register``;
plug-ins can also register through the ``tagger_model_families`` entry-point group.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

import catalogue
from pydantic import BaseModel

model_families = catalogue.create("tagger", "model_families", entry_points=True)


# Built-in families and the module that registers each; a module is imported only when its family
# is used, so TF-IDF runs never import torch or transformers.
BUILTIN_FAMILIES = {
    "tfidf_logreg": "train.models.tfidf",
    "tfidf_svm": "train.models.tfidf",
    "transformer": "train.models.transformer",
    "embedding_logreg": "train.models.embedding",
    "setfit": "train.models.setfit_family",
    "static_logreg": "train.models.static",
}


def get_family(name: str) -> Any:
    """The family class registered under ``name``; a clear error suggests the closest name."""
    if name in BUILTIN_FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[name])
    try:
        return model_families.get(name)
    except catalogue.RegistryError:
        known = sorted(set(model_families.get_all()) | set(BUILTIN_FAMILIES))
        hint = difflib.get_close_matches(name, known, n=1, cutoff=0.4)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        raise ValueError(
            f"model.family: unknown family '{name}'{suggestion} (registered: {', '.join(known)})"
        ) from None


BUILTIN_PARAMS = {
    "tfidf_logreg": "TfidfParams",
    "tfidf_svm": "TfidfSvmParams",
    "transformer": "TransformerParams",
    "embedding_logreg": "EmbeddingParams",
    "setfit": "SetFitParams",
    "static_logreg": "StaticParams",
}


def model_params_schema(name: str) -> type[BaseModel]:
    """The pydantic model that validates ``model.params`` for a family.

    Built-in families' params come from ``train.models.params`` without importing the family itself.
    """
    if name in BUILTIN_PARAMS:
        from train.models import params

        return getattr(params, BUILTIN_PARAMS[name])
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
