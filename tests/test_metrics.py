import numpy as np
import pytest
from sklearn.metrics import f1_score

from train.evaluation.metrics import bootstrap_cis, multiclass_metrics, multilabel_metrics

LABELS = ["favor", "against", "neutral"]


def test_multiclass_metrics_and_semeval_favg():
    gold = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    m = multiclass_metrics(gold, pred, LABELS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_favor"] == pytest.approx(0.5)  # P=1/2, R=1/2
    assert m["f1_against"] == pytest.approx(0.8)  # P=2/3, R=1
    assert m["f1_neutral"] == pytest.approx(2 / 3)  # P=1, R=1/2
    assert m["f_avg"] == pytest.approx((0.5 + 0.8) / 2)
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_multilabel_metrics():
    gold = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    pred = np.array([[1, 0], [1, 0], [0, 1], [0, 1]])
    m = multilabel_metrics(gold, pred, ["a", "b"])
    assert m["subset_accuracy"] == pytest.approx(0.5)
    assert m["hamming_loss"] == pytest.approx(2 / 8)
    assert m["f1_a"] == pytest.approx(1.0)
    assert m["f1_b"] == pytest.approx(0.5)
    assert m["support_b"] == 2
    assert m["f1_micro"] == pytest.approx(f1_score(gold, pred, average="micro"))


def test_bootstrap_intervals_bracket_every_headline_metric():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 200)
    pred = np.where(rng.random(200) < 0.7, gold, rng.integers(0, 3, 200))
    labels = ["favor", "against", "neutral"]
    intervals = bootstrap_cis(gold, pred, labels, multilabel=False, samples=500)
    points = multiclass_metrics(gold, pred, labels)
    assert set(intervals) == {"f1_macro", "accuracy", "f_avg"}
    for metric, (low, high) in intervals.items():
        assert low < points[metric] < high and 0 < high - low < 0.3, metric
    assert bootstrap_cis(gold, pred, labels, multilabel=False, samples=500) == intervals  # seeded
    G = rng.integers(0, 2, (200, 4))
    P = np.where(rng.random((200, 4)) < 0.8, G, 1 - G)
    multi = bootstrap_cis(G, P, list("abcd"), multilabel=True, samples=500)
    points = multilabel_metrics(G, P, list("abcd"))
    assert set(multi) == {"f1_macro", "f1_micro", "hamming_loss"}
    for metric, (low, high) in multi.items():
        assert low < points[metric] < high, metric


def test_labels_with_characters_mlflow_refuses_still_log():
    """A benchmark's label such as "Business & Finance" must not fail the run when metrics are logged."""
    import mlflow

    from train.tracking import store

    labels = ["Business & Finance", "Sci/Tech", "World (other)"]
    m = multiclass_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), labels)
    assert m["f1_Business _ Finance"] == 1.0 and m["f1_Sci/Tech"] == pytest.approx(2 / 3)
    store.setup(experiment="label-names")
    with mlflow.start_run() as run:
        mlflow.log_metrics({f"test/{k}": v for k, v in m.items()})
    assert mlflow.get_run(run.info.run_id).data.metrics["test/f1_World _other_"] == 0.0


def test_config_mappings_with_such_labels_log_as_params():
    import mlflow

    from train.tracking import store

    params = store.flatten({"data": {"label_map": {"Business & Finance": "business"}, "columns": {"text": "t"}}})
    assert params == {"data.label_map": '{"Business & Finance": "business"}', "data.columns.text": "t"}
    store.setup(experiment="label-names")
    with mlflow.start_run() as run:
        mlflow.log_params(params)
    assert mlflow.get_run(run.info.run_id).data.params["data.label_map"] == '{"Business & Finance": "business"}'


def test_best_thresholds_maximise_f1_like_a_scan_with_sklearn():
    """The vectorised threshold search picks what scoring every candidate with sklearn's f1_score picks."""
    from train.models.base import best_thresholds

    def scan(proba, Y):
        chosen = []
        for j in range(Y.shape[1]):
            candidates = np.unique(np.concatenate([[0.5], np.clip(proba[:, j], 0.05, 0.95)]))
            if Y[:, j].sum() == 0:
                chosen.append(0.5)
                continue
            f1s = [f1_score(Y[:, j], proba[:, j] >= t, zero_division=0) for t in candidates]
            ties = [t for t, f in zip(candidates, f1s, strict=True) if f >= max(f1s) - 1e-12]
            chosen.append(min(ties, key=lambda t: abs(t - 0.5)))
        return np.array(chosen)

    rng = np.random.default_rng(0)
    for _ in range(6):
        n = int(rng.integers(20, 150))
        Y = (rng.random((n, 4)) < rng.random(4) * 0.5).astype(int)
        proba = np.clip(Y * 0.3 + rng.random((n, 4)) * 0.7, 0, 1).round(int(rng.integers(2, 4)))  # with ties
        assert np.allclose(best_thresholds(proba, Y), scan(proba, Y))
