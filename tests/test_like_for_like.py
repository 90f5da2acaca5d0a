"""Like-for-like model choice: dev scored by decisions never tuned on the sentences they decide,
runs compared only by the same kind of validation score, and ties within the noise marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from train.config import load_config
from train.training.pipeline import cross_fitted_decisions, dev_halves, prepare

QUICK = ["evaluation.bootstrap_samples=0", "evaluation.sets=[]", "model.params.char_ngram_range=null"]


def fitted(config_path: Path, data: Path, *extra: str):
    """A real model fitted on the training part of ``data``; the config, the dev part and its scores."""
    config = load_config(config_path, [f"data.train={data}", *QUICK, *extra])
    prepared = prepare(config)
    model = prepared.model
    model.fit(prepared.train_part.inputs, prepared.train_part.labels)
    return config, model, prepared.dev_part, model.predict_proba(prepared.dev_part.inputs)


def relabelled(dev, rows: np.ndarray, values: list):
    """``dev`` with the gold labels of ``rows`` replaced by ``values``."""
    frame = dev.frame.copy()
    labels = list(frame["labels"])
    for i, value in zip(rows, values, strict=True):
        labels[i] = value
    frame["labels"] = labels
    return type(dev)(dev.path, frame, dev.sha256, dev.files)


def least_likely(model, proba: np.ndarray) -> list:
    """The gold labels a model finds least likely: every label it scores under 0.5 (multi-label),
    else its lowest-scored class."""
    if model.multilabel:
        return [[lab for lab, p in zip(model.labels, row, strict=True) if p < 0.5] for row in proba]
    return [model.labels[i] for i in proba.argmin(axis=1)]


@pytest.mark.parametrize("task", ["topic", "stance"])
def test_no_dev_sentence_is_decided_by_a_decision_tuned_on_its_own_label(small_train, task):
    """Change the gold labels of one whole document of dev: the cross-fitted decisions of its
    sentences stay as they were (their half's decision was tuned on the other half). Decisions tuned
    on all of dev, as dev was scored before, differ from them."""
    config, model, dev, proba = fitted(ROOT / f"configs/{task}/tfidf_logreg.yaml", small_train)
    halves = dev_halves(config, model, dev)
    for document in dev.frame["group"].unique():  # documents stay whole; both halves hold every label
        assert len(set(halves[dev.frame["group"] == document])) == 1
    Y = model.encode(dev.labels)
    onehot = Y if model.multilabel else np.eye(3, dtype=int)[Y]
    assert (onehot[halves == 0].sum(axis=0) > 0).all() and (onehot[halves == 1].sum(axis=0) > 0).all()
    before = cross_fitted_decisions(config, model, dev, proba, halves)
    assert before == cross_fitted_decisions(config, model, dev, proba)
    for document in dev.frame["group"].unique()[:4]:
        rows = np.flatnonzero(dev.frame["group"] == document)
        changed = relabelled(dev, rows, least_likely(model, proba[rows]))
        after = cross_fitted_decisions(config, model, changed, proba, halves)
        assert [after[i] for i in rows] == [before[i] for i in rows], document
    model.set_decision(proba, Y)
    assert model.decide(proba) != before


def test_untuned_decision_scores_dev_as_it_is(small_train):
    config, model, dev, proba = fitted(ROOT / "configs/topic/tfidf_logreg.yaml", small_train, "decision.tune=false")
    assert cross_fitted_decisions(config, model, dev, proba) is None


def test_train_scores_dev_with_cross_fitted_decisions_and_ships_the_whole_dev_decision(small_train, tmp_path):
    """``dev/*`` and dev's predictions come from the cross-fitted decisions; the model keeps the
    thresholds tuned on all of dev; the run says how dev was scored (``tagger.dev_scoring``)."""
    import copy
    import io
    import json

    import pandas as pd
    from test_recorder import MemoryRecorder

    from train.models.decision import best_thresholds
    from train.training.pipeline import DEV_SCORING_TAG, train

    recorder = MemoryRecorder()
    config_path = ROOT / "configs/topic/tfidf_logreg.yaml"
    config = load_config(config_path, [f"data.train={small_train}", *QUICK])
    run = recorder.runs[train(config, recorder)]
    model = run.models[0]
    dev = prepare(config).dev_part
    proba = model.predict_proba(dev.inputs)
    expected = cross_fitted_decisions(config, copy.deepcopy(model), dev, proba)
    logged = pd.read_csv(io.BytesIO(run.artifacts["reports/dev_predictions.csv"]), keep_default_na=False)
    assert logged["predicted"].tolist() == [";".join(v) for v in expected]
    assert run.tags[DEV_SCORING_TAG] == "cross-fitted"
    shipped = json.loads(run.tags["thresholds"])
    assert list(shipped.values()) == best_thresholds(proba, model.encode(dev.labels)).tolist()
    assert model.decide(proba) != expected  # the shipped decision is not what scored dev

    config = load_config(config_path, [f"data.train={small_train}", *QUICK, "decision.tune=false"])
    untuned = recorder.runs[train(config, recorder)]
    assert untuned.tags[DEV_SCORING_TAG] == "untuned"
