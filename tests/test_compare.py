"""Paired comparison of two runs: a run against itself, a planted difference, and refusals."""

import json

import numpy as np
import pytest
from conftest import invoke

from train.errors import TaggerError
from train.evaluation.compare import check_same_data, compare_predictions

LABELS = ["favor", "against", "neutral"]


def test_a_model_against_itself_differs_by_nothing():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, gold, rng.integers(0, 3, 300))
    result = compare_predictions(gold, pred, pred, LABELS, multilabel=False, samples=2000)
    assert result.metric.diff == 0 and result.metric.low == 0 == result.metric.high
    assert result.metric.p_value == 1.0 and all(d.p_value == 1.0 for d in result.labels)
    assert result.mcnemar == {"only_a_right": 0, "only_b_right": 0, "p_value": 1.0}


def test_a_planted_difference_is_detected():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, (400, 4))
    good = np.where(rng.random((400, 4)) < 0.9, gold, 1 - gold)
    poor = np.where(rng.random((400, 4)) < 0.7, gold, 1 - gold)
    result = compare_predictions(gold, poor, good, list("abcd"), multilabel=True, samples=2000)
    assert result.metric.diff > 0.1 and result.metric.low > 0 and result.metric.p_value < 0.01
    assert result.mcnemar["only_b_right"] > result.mcnemar["only_a_right"] and result.mcnemar["p_value"] < 0.01
    same_direction = compare_predictions(gold, good, poor, list("abcd"), multilabel=True, samples=2000)
    assert same_direction.metric.diff == pytest.approx(-result.metric.diff)


def test_runs_scored_on_different_data_are_refused():
    with pytest.raises(TaggerError, match="scored on different 'seeds' data"):
        check_same_data("seeds", {"dataset_sha256.seeds": "aa"}, {"dataset_sha256.seeds": "bb"}, ["1"], ["1"])
    with pytest.raises(TaggerError, match="cover different sentences"):
        check_same_data("seeds", {"dataset_sha256.seeds": "aa"}, {"dataset_sha256.seeds": "aa"}, ["1"], ["2"])


def test_compare_cli_on_logged_runs(registry):
    runs = registry[0]
    a, b = runs[("topic", "tfidf_logreg")], runs[("topic", "tfidf_svm")]
    table = invoke("compare", a, b, "--samples", "500").stdout
    assert "f1_macro" in table and "McNemar" in table and "f1_security" in table
    itself = json.loads(invoke("compare", a, a, "--samples", "500", "--json").stdout)
    assert itself["metric"]["diff"] == 0 and itself["metric"]["p_value"] == 1.0


def test_compare_bad_references_are_one_line(registry):
    a = registry[0][("topic", "tfidf_logreg")]
    with pytest.raises(TaggerError, match="not found"):
        from train.evaluation.compare import compare_runs

        compare_runs(a, "0" * 32, samples=100)
    with pytest.raises(TaggerError, match="no predictions for set 'nothing'"):
        compare_runs(a, a, set_name="nothing", samples=100)
    with pytest.raises(TaggerError, match="different task types"):
        compare_runs(a, registry[0][("stance", "tfidf_logreg")], samples=100)


def test_point_values_match_the_logged_metrics():
    from train.evaluation.metrics import multiclass_metrics, multilabel_metrics

    rng = np.random.default_rng(2)
    g = rng.integers(0, 3, 300)
    a = np.where(rng.random(300) < 0.8, g, rng.integers(0, 3, 300))
    reference = multiclass_metrics(g, a, LABELS)
    for metric in ("f1_macro", "accuracy", "f_avg"):
        result = compare_predictions(g, a, a, LABELS, multilabel=False, metric=metric, samples=200)
        assert result.metric.a == pytest.approx(reference[metric]), metric
    G = rng.integers(0, 2, (300, 4))
    P = np.where(rng.random((300, 4)) < 0.8, G, 1 - G)
    reference = multilabel_metrics(G, P, list("abcd"))
    for metric in ("f1_macro", "f1_micro", "hamming_loss"):
        result = compare_predictions(G, P, P, list("abcd"), multilabel=True, metric=metric, samples=200)
        assert result.metric.a == pytest.approx(reference[metric]), metric
