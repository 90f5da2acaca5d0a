"""The contract every model family keeps, as one check (like scikit-learn's ``check_estimator``).

``check_family(name)`` fits the family on a small multi-label and a small multi-class problem and
asserts: ``fit`` returns the model and leaves its params as given; scores have one column per label,
in ``labels`` order, within [0, 1] (multi-class rows sum to 1); ``decide`` returns known labels; a
save/load round trip scores the same; two fits with one seed score the same. Plug-in authors run it
on their own families.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from train.models.base import TextClassifier
from train.registry import build_model, model_params_schema

WORDS = {
    "security": "troops militia attack border rockets",
    "energy": "gas oil pipeline electricity supply",
    "trade": "tariff exports trade goods customs",
    "diplomacy": "ministers talks embassy summit visit",
}
STANCE_WORDS = {
    "favor": "welcomed agreement cooperation partnership",
    "against": "condemned dispute sanctions protest",
    "neutral": "reported scheduled meeting statement",
}


def toy_problem(multilabel: bool, n: int = 48, seed: int = 0) -> tuple[pd.DataFrame, list, list[str]]:
    """A small, learnable problem: sentences built from label words, with a target for stance."""
    rng = np.random.default_rng(seed)
    vocab = WORDS if multilabel else STANCE_WORDS
    labels = list(vocab)
    texts, ys = [], []
    for i in range(n):
        if multilabel:
            chosen = [labels[i % len(labels)], *([labels[(i + 1) % len(labels)]] if i % 3 == 0 else [])]
        else:
            chosen = [labels[i % len(labels)]]
        words = [w for label in chosen for w in rng.permutation(vocab[label].split())[:3]]
        texts.append(f"The {' '.join(words)} in the capital on day {i}.")
        ys.append(chosen if multilabel else chosen[0])
    X = pd.DataFrame({"text": texts, "target": ["closer Xandria–Yorvik ties"] * n})
    return X, ys, labels


def check_family(name: str, params: dict | None = None, seed: int = 7, min_agreement: float = 0.5) -> None:
    """Assert the family contract for family ``name`` (with ``params``) on both task types.

    ``min_agreement``: the share of its own training sentences the fitted model must get right, which
    catches scores whose columns are not in label order (0 for settings too brief to learn).
    """
    validated = model_params_schema(name)(**(params or {})).model_dump()
    for multilabel in (True, False):
        X, y, labels = toy_problem(multilabel)
        task_type = "multilabel" if multilabel else "multiclass"
        model = build_model(name, task_type, labels, copy.deepcopy(validated), seed)
        given = copy.deepcopy(model.get_params())
        assert model.fit(X, y, X, y) is model, f"{name}: fit must return the model"
        assert model.get_params() == given, f"{name}: fit changed its params ({given} -> {model.get_params()})"
        proba = model.predict_proba(X)
        assert proba.shape == (len(X), len(labels)), f"{name}: scores have shape {proba.shape}"
        assert np.all((proba >= 0) & (proba <= 1)), f"{name}: scores outside [0, 1]"
        if not multilabel:
            assert np.allclose(proba.sum(axis=1), 1, atol=1e-6), f"{name}: multi-class scores must sum to 1"
        decided = model.predict(X)
        known = set(labels)
        assert all(set(d) <= known if multilabel else d in known for d in decided), f"{name}: unknown labels"
        agreement = np.mean([set(d) == set(g) if multilabel else d == g for d, g in zip(decided, y, strict=True)])
        misaligned = f"{name}: labels are not column-aligned ({agreement:.0%} right on its own data)"
        assert agreement >= min_agreement, misaligned
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "model")
            loaded = TextClassifier.load(Path(tmp) / "model")
            assert np.allclose(loaded.predict_proba(X), proba, atol=1e-6), f"{name}: save/load changed the scores"
        again = build_model(name, task_type, labels, copy.deepcopy(validated), seed).fit(X, y, X, y)
        assert np.allclose(again.predict_proba(X), proba, atol=1e-6), f"{name}: not deterministic with a seed"
