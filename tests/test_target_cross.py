"""Target-crossed word features: target-specific weights beside shared ones, compiled like the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_linear_scoring import PROBE, ROWS, STANCES, sklearn_scores

from train.models.linear_scoring import CrossedBlock
from train.models.tfidf import TfidfLogReg

T1, T2, UNSEEN = "closer Arland–Belmar ties", "closer Corvia–Dunmark ties", "closer Estra–Folland ties"
FILLER = "officials analysts ministry report week capital region council city province statement".split()


def opposite_meanings(n: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """The same phrases mean favor toward one target and against toward the other; filler is neutral."""
    rng = np.random.default_rng(seed)
    texts, targets, labels = [], [], []
    for i in range(n):
        target = (T1, T2)[i % 2]
        kind = rng.integers(3)
        words = list(rng.choice(FILLER, 4))
        if kind == 0:
            phrase, label = "joint port zone expansion", "favor" if target == T1 else "against"
        elif kind == 1:
            phrase, label = "border fence construction", "against" if target == T1 else "favor"
        else:
            phrase, label = "weather and traffic", "neutral"
        texts.append(" ".join([*words[:2], phrase, *words[2:]]))
        targets.append(target)
        labels.append(label)
    return pd.DataFrame({"text": texts, "target": targets}), labels


def test_crossing_learns_what_a_phrase_means_for_each_target():
    X, y = opposite_meanings(300, seed=0)
    X_test, y_test = opposite_meanings(200, seed=1)
    params = {"char_ngram_range": None, "cross_target_min_sentences": 20}
    plain = TfidfLogReg("multiclass", STANCES, **params).fit(X, y)
    crossed = TfidfLogReg("multiclass", STANCES, cross_target=True, **params).fit(X, y)
    accuracy = lambda model: np.mean(np.array(model.predict(X_test)) == np.array(y_test))  # noqa: E731
    assert accuracy(plain) < 0.75  # a per-target bias cannot flip a phrase's meaning
    assert accuracy(crossed) > 0.95
    # a target never seen in training gets the shared weights only: the same scores as an empty target block
    unseen = X_test.assign(target=UNSEEN)
    words = crossed.pipeline_[0].named_transformers_["cross"].transform(unseen)
    assert words.nnz == 0
    assert set(crossed.predict(unseen[X_test["text"].str.contains("weather")])) == {"neutral"}


def test_compiled_scores_equal_the_pipeline_with_crossing():
    frame = pd.DataFrame({"text": [r["text"] for r in ROWS], "target": [r["target"] for r in ROWS]})
    model = TfidfLogReg("multiclass", STANCES, cross_target=True, cross_target_min_sentences=20).fit(
        frame, [r["stance"] for r in ROWS]
    )
    assert any(isinstance(block, CrossedBlock) for block in model.compiled_.features.blocks)
    known = pd.DataFrame({"text": PROBE["text"], "target": [ROWS[i % len(ROWS)]["target"] for i in range(len(PROBE))]})
    for probe in (PROBE, known):  # an unseen target (the seeds' pair) and targets seen in training
        np.testing.assert_allclose(
            model.predict_proba(probe), model.pipeline_.predict_proba(pd.DataFrame(model._inputs(probe))), atol=1e-12
        )
    np.testing.assert_allclose(model.predict_proba(PROBE), sklearn_scores(model), atol=1e-12)
