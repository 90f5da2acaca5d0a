"""Label-prior shift correction: EM recovers a batch's priors and the adjusted decisions improve."""

import json

import numpy as np
import pytest
from conftest import invoke

from train.models.prior_shift import adjust_priors

MEANS = np.array([[1.5, 0.0], [0.0, 1.5], [-1.0, -1.0]])


def gaussian_batch(priors, n: int, seed: int, train_priors=(1 / 3, 1 / 3, 1 / 3)):
    """Points from three Gaussians drawn with ``priors``; exact posteriors under ``train_priors``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, n, p=priors)
    x = MEANS[y] + rng.normal(size=(n, 2))
    likelihood = np.exp(-0.5 * ((x[:, None, :] - MEANS[None]) ** 2).sum(axis=2))
    posterior = likelihood * np.array(train_priors)
    return posterior / posterior.sum(axis=1, keepdims=True), y


def test_em_recovers_a_known_shift_and_raises_accuracy():
    shifted = np.array([0.1, 0.1, 0.8])  # trained on balanced data, tagging a mostly-neutral batch
    proba, y = gaussian_batch(shifted, 4000, seed=1)
    priors, adjusted = adjust_priors(proba, np.full(3, 1 / 3), multilabel=False)
    assert np.allclose(priors, shifted, atol=0.03), priors
    assert np.allclose(adjusted.sum(axis=1), 1)
    assert np.mean(adjusted.argmax(axis=1) == y) > np.mean(proba.argmax(axis=1) == y) + 0.03


def test_without_a_shift_the_priors_stay():
    proba, _ = gaussian_batch([1 / 3] * 3, 4000, seed=2)
    priors, adjusted = adjust_priors(proba, np.full(3, 1 / 3), multilabel=False)
    assert np.allclose(priors, 1 / 3, atol=0.03)
    assert np.mean(adjusted.argmax(axis=1) == proba.argmax(axis=1)) > 0.95


def test_multilabel_priors_are_estimated_label_by_label():
    rng = np.random.default_rng(3)
    trained, batch = np.array([0.5, 0.5]), np.array([0.1, 0.6])
    Y = (rng.random((4000, 2)) < batch).astype(int)
    scores = rng.normal(np.where(Y == 1, 1.0, -1.0), 1.0)  # a logistic score, calibrated for priors 0.5
    proba = 1 / (1 + np.exp(-2 * scores))
    priors, adjusted = adjust_priors(proba, trained, multilabel=True)
    assert np.allclose(priors, batch, atol=0.04), priors
    assert adjusted.shape == proba.shape and np.all((adjusted >= 0) & (adjusted <= 1))


def test_predict_adjust_priors_reports_the_priors(registry, tmp_path, caplog):
    runs, _ = registry
    stance_run = runs[("stance", "tfidf_logreg")]
    lines = [{"text": f"The weather in the capital was mild on day {i}."} for i in range(30)]
    source = tmp_path / "batch.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in lines), encoding="utf-8")
    with caplog.at_level("INFO", logger="tagger"):
        out = invoke("predict", stance_run, "--input", str(source), "--adjust-priors").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 30 and all(sum(r["scores"].values()) == pytest.approx(1, abs=1e-3) for r in rows)
    report = [r.message for r in caplog.records if "label priors" in r.message]
    assert report and "neutral" in report[0] and "->" in report[0]
    plain = [json.loads(line) for line in invoke("predict", stance_run, "--input", str(source)).stdout.splitlines()]
    assert [r["scores"] for r in plain] != [r["scores"] for r in rows]  # the scores were adjusted
