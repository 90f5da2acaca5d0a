"""The built-in model families, each declared once: its registered name, module, params and quick settings.

The registry reads this table to import a family's module only when the family is used (TF-IDF runs
never import PyTorch) and to validate a config's ``model.params`` without importing the family at
all (a config error is reported in well under a second). Each family class is registered with
``@register_family(SPEC)`` (``train.registry``), which takes its name and ``Params`` from here;
``tests/test_registry.py`` checks that each spec's module registers the family it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from train.models.params import (
    EmbeddingParams,
    FamilyParams,
    SetFitParams,
    StaticParams,
    TfidfParams,
    TfidfSvmParams,
    TransformerParams,
)


@dataclass(frozen=True)
class FamilySpec:
    """One family: ``name`` (what configs say), the ``module`` defining its class, its ``Params`` and
    ``quick_params``, settings that make ``check_family`` run in seconds (as sktime's ``get_test_params``)."""

    name: str
    module: str
    Params: type[FamilyParams]
    quick_params: dict = field(default_factory=dict)


TFIDF_LOGREG = FamilySpec("tfidf_logreg", "train.models.tfidf", TfidfParams)
TFIDF_SVM = FamilySpec("tfidf_svm", "train.models.tfidf", TfidfSvmParams, {"calibration_folds": 2})
EMBEDDING_LOGREG = FamilySpec("embedding_logreg", "train.models.embedding", EmbeddingParams, {"batch_size": 16})
STATIC_LOGREG = FamilySpec("static_logreg", "train.models.static", StaticParams, {"pca_dims": 32})
SETFIT = FamilySpec(
    "setfit", "train.models.setfit_family", SetFitParams,
    {"max_steps": 2, "batch_size": 8, "num_iterations": 1, "max_length": 32},
)  # fmt: skip
TRANSFORMER = FamilySpec(
    "transformer", "train.models.transformer", TransformerParams,
    {"max_steps": 2, "batch_size": 8, "max_length": 32, "early_stopping_patience": None},
)  # fmt: skip

BUILTIN: dict[str, FamilySpec] = {
    spec.name: spec for spec in (TFIDF_LOGREG, TFIDF_SVM, EMBEDDING_LOGREG, STATIC_LOGREG, SETFIT, TRANSFORMER)
}
