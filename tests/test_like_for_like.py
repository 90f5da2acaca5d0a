"""Like-for-like model choice: dev scored by decisions never tuned on the sentences they decide,
runs compared only by the same kind of validation score, and ties within the noise marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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


def search_rows(*runs: dict) -> pd.DataFrame:
    """Runs as ``mlflow.search_runs`` returns them: ``metrics.*``, ``params.*`` and ``tags.*`` columns."""
    frame = pd.DataFrame(
        [
            {
                "run_id": run["id"],
                "start_time": pd.Timestamp("2025-01-01") + pd.Timedelta(minutes=i),
                "tags.mlflow.runName": run["id"],
                "params.model.params": run.get("config", run["id"]),
                "params.tracking.run_name": f"name-{i}",
                **{f"metrics.{k}": v for k, v in run.get("metrics", {}).items()},
            }
            for i, run in enumerate(runs)
        ]
    )
    from train.tracking.runs import with_validation_metric

    return with_validation_metric(frame)


def dev_run(run_id: str, score: float, low: float | None = None, config: str | None = None) -> dict:
    metrics = {"dev/f1_macro": score}
    if low is not None:
        metrics |= {"dev/f1_macro_ci_low": low, "dev/f1_macro_ci_high": score + (score - low)}
    return {"id": run_id, "metrics": metrics, "config": config or run_id}


def cv_run(run_id: str, mean: float, std: float, config: str | None = None) -> dict:
    return {"id": run_id, "metrics": {"cv/f1_macro_mean": mean, "cv/f1_macro_std": std}, "config": config or run_id}


def test_runs_rank_within_the_compared_kind_and_mark_ties():
    """CV runs first (the kind promote compares), best first, then dev runs; within 2 fold stds of the
    CV leader is a tie, beyond is not; the dev runs' higher numbers do not jump the CV runs."""
    from train.tracking.runs import SCORE_KIND, comparable_kind, dev_only, mark_ties, rank_by_kind

    runs = search_rows(
        dev_run("d1", 0.90, 0.85), cv_run("c1", 0.80, 0.01), cv_run("c2", 0.79, 0.01), cv_run("c3", 0.77, 0.01),
        dev_run("same-as-c3", 0.95, 0.90, config="c3"),
    )
    assert comparable_kind(runs) == "cv"
    ranked = rank_by_kind(runs)
    assert ranked["run_id"].tolist() == ["c1", "c2", "c3", "same-as-c3", "d1"]
    assert ranked[SCORE_KIND].tolist() == ["cv", "cv", "cv", "dev", "dev"]
    assert mark_ties(ranked).tolist() == ["best", "tie", "", "", ""]  # 0.79 >= 0.80 - 0.02 > 0.77
    assert dev_only(runs)["run_id"].tolist() == ["d1"]  # same-as-c3's config was cross-validated

    dev = search_rows(dev_run("a", 0.81, 0.78), dev_run("b", 0.785, 0.76), dev_run("c", 0.77, 0.74))
    ranked = rank_by_kind(dev)
    assert comparable_kind(dev) == "dev" and ranked["run_id"].tolist() == ["a", "b", "c"]
    assert mark_ties(ranked).tolist() == ["best", "tie", ""]  # within the leader's interval [0.78, 0.84]
    without_interval = search_rows(dev_run("a", 0.81), dev_run("b", 0.809))
    assert mark_ties(rank_by_kind(without_interval)).tolist() == ["best", ""]  # no measure of noise: no tie


def test_a_mixed_field_is_one_line_that_says_how_to_compare():
    from train.tracking.runs import mixed_field

    runs = search_rows(cv_run("c1", 0.80, 0.01), dev_run("d1", 0.9), dev_run("d2", 0.7), dev_run("d3", 0.6))
    line = mixed_field(runs, "topic")
    assert "\n" not in line
    assert line.startswith("1 topic run has CV scores and 3 only dev scores (d1, d2, d3)")
    assert "`tagger promote --task topic --cv`" in line and "--metric dev/f1_macro" in line


def test_promote_states_the_kind_the_ties_and_the_tie_break():
    from train.tracking.promote import Choice
    from train.tracking.runs import VALIDATION_METRIC, mark_ties, rank_by_kind

    ranked = rank_by_kind(search_rows(cv_run("c1", 0.80, 0.01), cv_run("c2", 0.79, 0.01), cv_run("c3", 0.70, 0.01)))
    tied = ranked[mark_ties(ranked) == "tie"]
    text = Choice("topic", VALIDATION_METRIC, ranked.iloc[0], ranked.iloc[1], kind="cv", tied=tied).describe()
    assert text.startswith("Best topic run by validation/f1_macro (CV means, among cross-validated runs): run c1")
    assert "Tied with run c2 (c2, 0.7900): within 2 fold stds of the winner's CV mean (scores >= 0.7800)" in text
    assert "chose by the tie-break: the higher score" in text and "c3" not in text


@pytest.mark.slow
def test_promote_refuses_a_mixed_field_and_cross_validates_it_on_demand(small_train, tmp_path, monkeypatch):
    """Two configs trained, one of them also cross-validated: its train run is covered by its CV run,
    the other config is not, so promote refuses in one line; ``promote --cv`` cross-validates that
    config (from the run's config.yaml) and then compares CV with CV."""
    from click.testing import CliRunner

    from train.cli import cli
    from train.errors import TaggerError
    from train.tracking.promote import choose
    from train.tracking.runs import list_runs
    from train.training.cv import cross_validate
    from train.training.pipeline import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mixed.db'}")
    path = ROOT / "configs/topic/tfidf_logreg.yaml"
    strong = load_config(path, [f"data.train={small_train}", *QUICK, "split.folds=3"])
    weak = load_config(path, [f"data.train={small_train}", *QUICK, "split.folds=3", "model.params.C=0.05"])
    train(strong, config_path=path)
    weak_run = train(weak, config_path=path)
    assert choose("topic").kind == "dev"  # dev among dev
    cv_id = cross_validate(strong, config_path=path)

    with pytest.raises(TaggerError) as info:
        choose("topic")
    assert str(info.value).startswith("1 topic run has CV scores and 1 only dev scores (tfidf_logreg-")
    table = list_runs("topic", "validation/f1_macro")
    assert table["kind"].tolist() == ["cv", "dev", "dev"] and table["run_id"][0] == cv_id
    assert table["tie"][0] == "best" and "--cv" in table.attrs["note"]

    result = CliRunner().invoke(cli, ["promote", "--task", "topic", "--cv", "--dry-run"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Best topic run by validation/f1_macro (CV means, among cross-validated runs)" in result.output
    table = list_runs("topic", "validation/f1_macro")
    assert table["kind"].tolist() == ["cv", "cv", "dev", "dev"] and "note" not in table.attrs
    new_cv = [run_id for run_id in table["run_id"][:2] if run_id != cv_id]
    assert len(new_cv) == 1 and new_cv[0] != weak_run
    import mlflow

    assert mlflow.get_run(new_cv[0]).data.params["model.params.C"] == "0.05"
