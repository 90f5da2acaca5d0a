"""Cross-validation: folds keep groups whole and labels balanced; a CV run is a parent with fold children."""

import mlflow
import numpy as np
import pytest
from conftest import ROOT, read_jsonl

from train.data.folds import grouped_stratified_folds


@pytest.mark.parametrize("multilabel", [True, False])
def test_folds_keep_groups_together_and_balance_labels(multilabel):
    rng = np.random.default_rng(3)
    n, groups = 1500, rng.integers(0, 250, 1500)
    if multilabel:
        Y = (rng.random((n, 4)) < [0.45, 0.25, 0.12, 0.05]).astype(int)
    else:
        Y = np.eye(3, dtype=int)[rng.choice(3, n, p=[0.2, 0.1, 0.7])]
    folds = grouped_stratified_folds(Y, groups, 5, seed=1)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1  # a group never straddles folds
    overall = Y.mean(axis=0)
    for k in range(5):
        assert abs((folds == k).sum() - n / 5) < 0.1 * n / 5
        assert np.all(np.abs(Y[folds == k].mean(axis=0) - overall) < 0.03), (k, Y[folds == k].mean(axis=0), overall)


def test_too_few_groups_is_an_error():
    with pytest.raises(ValueError, match="3 groups cannot fill 5 folds"):
        grouped_stratified_folds(np.ones((9, 2)), np.repeat([1, 2, 3], 3), 5)


@pytest.mark.slow
def test_cv_logs_a_parent_with_fold_children_and_a_final_model(small_train, tmp_path, monkeypatch):
    from train.config import load_config
    from train.tracking.promote import choose
    from train.tracking.runs import list_runs
    from train.training.cv import cross_validate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'cv.db'}")  # its own store
    config = load_config(
        ROOT / "configs/topic/tfidf_logreg.yaml",
        [f"data.train={small_train}", "evaluation.bootstrap_samples=0", "model.params.char_ngram_range=null"],
    )
    parent_id = cross_validate(config, config_path="configs/topic/tfidf_logreg.yaml", folds=3)
    parent = mlflow.get_run(parent_id)
    assert parent.data.tags["tagger.cv"] == "parent"
    assert {"cv/f1_macro_mean", "cv/f1_macro_std", "seeds/f1_macro"} <= set(parent.data.metrics)
    children = mlflow.search_runs(
        experiment_ids=[parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert len(children) == 3 and set(children["tags.tagger.cv"]) == {"fold"}
    folds = children["metrics.validation/f1_macro"].to_numpy()
    assert parent.data.metrics["cv/f1_macro_mean"] == pytest.approx(folds.mean())
    assert sorted(children["metrics.validation_size"]) and children["metrics.validation_size"].sum() == len(
        read_jsonl(small_train)
    )
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(parent_id)}
    assert {"oof_predictions.csv", "cv_summary.json", "reports"} <= artifacts
    # fold children are never candidates; the parent (with its final model) is
    listed = list_runs("topic", "cv/f1_macro_mean")["run_id"].tolist()
    assert parent_id in listed and not set(children["run_id"]) & set(listed)
    assert choose("topic", "cv/f1_macro_mean").winner["run_id"] == parent_id
