"""Decisions tuned on held-out scores: class offsets (multi-class) and their use wherever a model predicts."""

import mlflow
import numpy as np
import pytest
from conftest import ROOT

from train.errors import TaggerError
from train.models.decision import apply_offsets, best_offsets, class_objective

LABELS = ["favor", "against", "neutral"]


def skewed_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of a model that under-rates the rare class 'against' (prior 10%), as class-balanced data would not."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=[0.3, 0.1, 0.6])
    logits = 1.2 * np.eye(3)[y] + rng.normal(0, 1.0, (n, 3)) + np.array([0.0, -2.0, 0.5])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return proba, y


@pytest.mark.parametrize("objective", ["f1_macro", "f_avg"])
def test_offsets_raise_the_objective_and_carry_over_to_new_data(objective):
    score = class_objective(objective, LABELS)
    proba, y = skewed_sample(3000, seed=1)
    offsets = best_offsets(proba, y, LABELS, objective)
    assert offsets[0] == 0 and offsets[1] > 0  # the under-rated class is lifted
    assert score(y, apply_offsets(proba, offsets)) > score(y, proba.argmax(axis=1)) + 0.05
    fresh, y_fresh = skewed_sample(3000, seed=2)  # tuned on one sample, better on another
    assert score(y_fresh, apply_offsets(fresh, offsets)) > score(y_fresh, fresh.argmax(axis=1)) + 0.05


def test_calibrated_scores_keep_plain_argmax_for_accuracy():
    rng = np.random.default_rng(0)
    y = rng.choice(3, 2000, p=[0.3, 0.3, 0.4])
    logits = 2.0 * np.eye(3)[y] + rng.normal(0, 1.0, (2000, 3))
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    offsets = best_offsets(proba, y, LABELS, "accuracy")
    assert np.all(np.abs(offsets) <= 0.3)  # nothing to correct: offsets stay near 0


def test_macro_f1_objective_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(5)
    y, p = rng.choice(3, 500), rng.choice(3, 500)
    assert class_objective("f1_macro", LABELS)(y, p) == pytest.approx(f1_score(y, p, average="macro"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["decision.objective=f_avg"], "decision.objective applies to multi-class tasks"),
        (["decision.objective=fscore"], "'decision.objective'"),
    ],
)
def test_decision_config_errors(overrides, message):
    from train.config import load_config

    with pytest.raises(TaggerError, match=message):
        load_config(ROOT / "configs/topic/tfidf_logreg.yaml", overrides)


def test_f_avg_needs_favor_and_against():
    from train.config import load_config

    with pytest.raises(TaggerError, match="needs the labels 'favor' and 'against'"):
        load_config(
            ROOT / "configs/stance/tfidf_logreg.yaml",
            ["decision.objective=f_avg", "task.labels=[pro, con, neutral]"],
        )


def test_a_logged_model_applies_its_offsets(tmp_path):
    """The pyfunc model (and so the service and ``tagger predict``) decides with the tuned offsets."""
    from train.models.checks import toy_problem
    from train.models.tfidf import TfidfLogReg
    from train.tracking.packaging import log_classifier, predict_frame

    X, y, labels = toy_problem(multilabel=False)
    model = TfidfLogReg("multiclass", labels, char_ngram_range=None).fit(X, y)
    plain = model.predict(X)
    model.offsets_ = np.array([0.0, 0.0, 8.0])  # an offset large enough to make the last class win everywhere
    assert set(model.predict(X)) == {labels[2]} != set(plain)
    from train.tracking import store

    store.setup(None, "tagger-test-offsets")  # the session's throw-away store
    with mlflow.start_run() as run:
        log_classifier(model, X, tmp_path / "work")
    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    assert set(loaded.predict(X)["stance"]) == {labels[2]}
    assert list(predict_frame(model, X)["stance"]) == [labels[2]] * len(X)
