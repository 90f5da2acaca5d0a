"""Several named training corpora in one config: trained together, scored per corpus in CV and on dev."""

from __future__ import annotations

import mlflow
import pytest
from conftest import ROOT, read_jsonl, write_jsonl

from train.config import load_config
from train.errors import TaggerError

TOPIC = ROOT / "configs/topic/tfidf_logreg.yaml"
FAST = ["evaluation.bootstrap_samples=0", "tracking.log_model=false", "model.params.char_ngram_range=null"]


@pytest.fixture
def two_corpora(tmp_path, small_train):
    rows = read_jsonl(small_train)
    docs = sorted({r["doc_id"] for r in rows})
    first = set(docs[: len(docs) * 2 // 3])
    a = write_jsonl(tmp_path / "a.jsonl", [r for r in rows if r["doc_id"] in first])
    b = write_jsonl(tmp_path / "b.jsonl", [r for r in rows if r["doc_id"] not in first])
    return a, b


@pytest.mark.slow
def test_cv_scores_each_corpus(two_corpora, tmp_path, monkeypatch):
    from train.training.cv import cross_validate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a, b = two_corpora
    config = load_config(TOPIC, [f"data.train={{real: {a}, written: {b}}}", "evaluation.sets=[]", *FAST])
    run = mlflow.get_run(cross_validate(config, config_path=TOPIC, folds=3))
    metrics = run.data.metrics
    for name in ("real", "written"):
        assert 0 < metrics[f"cv/{name}/f1_macro_mean"] <= 1
    assert metrics["cv/real/f1_macro_mean"] != metrics["cv/written/f1_macro_mean"]
    assert {"dataset_sha256.a.jsonl", "dataset_sha256.b.jsonl"} <= set(run.data.tags)


@pytest.mark.slow
def test_train_reports_dev_per_corpus(two_corpora, tmp_path, monkeypatch):
    from train.training.pipeline import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a, b = two_corpora
    config = load_config(TOPIC, [f"data.train={{real: {a}, written: {b}}}", "evaluation.sets=[]", *FAST])
    metrics = mlflow.get_run(train(config, config_path=TOPIC)).data.metrics
    assert "dev_real/f1_macro" in metrics and "dev_written/f1_macro" in metrics, sorted(metrics)


def test_an_id_in_two_corpora_is_an_error_naming_both(two_corpora, tmp_path):
    from train.data.loading import load_for

    a, _ = two_corpora
    copy = write_jsonl(tmp_path / "copy.jsonl", read_jsonl(a)[:5])
    config = load_config(TOPIC, [f"data.train={{real: {a}, again: {copy}}}"])
    with pytest.raises(TaggerError, match=r"copy.jsonl line 1: duplicate id .* \(also .*a.jsonl line 1\)"):
        load_for(config)


def test_corpus_names_are_checked():
    with pytest.raises(TaggerError, match="corpus name 'a/b'"):
        load_config(TOPIC, ["data.train={a/b: x.jsonl}"])


def test_unreviewed_suggestions_are_refused(tmp_path, small_train):
    from train.data.loading import load_for

    rows = read_jsonl(small_train)[:20]
    rows[2] = {**rows[2], "suggested": True}
    path = write_jsonl(tmp_path / "picked.jsonl", [{**r, "suggested": r.get("suggested", False)} for r in rows])
    with pytest.raises(TaggerError, match=r"picked.jsonl line 3: .*suggestions"):
        load_for(load_config(TOPIC, [f"data.train={path}"]))


@pytest.mark.parametrize(
    ("family", "task_type", "labels"),
    [
        ("tfidf_logreg", "multiclass", ["favor", "against", "neutral"]),
        ("tfidf_svm", "multiclass", ["favor", "against", "neutral"]),
        ("tfidf_logreg", "multilabel", ["security", "trade"]),
        ("tfidf_svm", "multilabel", ["security", "trade"]),
    ],
)
def test_weights_make_the_heavier_corpus_win(family, task_type, labels):
    """Two corpora label the same kind of sentence differently: the weighted one decides."""
    import numpy as np
    import pandas as pd

    from train.registry import build_model, model_params_schema

    words = ["border", "tariff", "talks", "ports", "army", "grain", "summit", "visa"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, 4)) for _ in range(120)]
    a_label, b_label = (labels[0], labels[1]) if task_type == "multiclass" else ([labels[0]], [labels[1]])
    other = labels[2] if task_type == "multiclass" else []
    y = [a_label if "border" in t else other for t in texts] + [b_label if "border" in t else other for t in texts]
    X = pd.DataFrame({"text": texts * 2, "target": ["closer A–B ties"] * 240})
    extra = {"calibration_folds": 2} if family == "tfidf_svm" else {}
    # class_weight balanced balances the weighted class totals, which would cancel the weights here
    params = model_params_schema(family)(class_weight=None, **extra)
    probe = pd.DataFrame({"text": ["border talks grain ports"], "target": ["closer A–B ties"]})
    for heavy, expected in ((0, a_label), (1, b_label)):
        weights = np.where((np.arange(240) < 120) == (heavy == 0), 20.0, 1.0)
        model = build_model(family, task_type, labels, params.model_dump(), 13).fit(X, y, sample_weight=weights)
        assert model.predict(probe)[0] == expected, (family, task_type, heavy)


@pytest.mark.slow
def test_train_with_weights_and_its_errors(two_corpora, tmp_path, monkeypatch):
    from train.training.pipeline import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a, b = two_corpora
    corpora = f"data.train={{real: {a}, written: {b}}}"
    config = load_config(TOPIC, [corpora, "data.weights={real: 3}", "evaluation.sets=[]", *FAST])
    run = mlflow.get_run(train(config, config_path=TOPIC))
    assert run.data.params["data.weights.real"] == "3.0", sorted(run.data.params)
    for override, message in [
        ("data.weights={real: 0}", r"data\.weights\.real.*greater than 0"),
        ("data.weights={news: 2}", r"data\.weights names corpus 'news', which data\.train does not have"),
    ]:
        with pytest.raises(TaggerError, match=message):
            load_config(TOPIC, [corpora, override])
    with pytest.raises(TaggerError, match=r"data\.weights weighs named corpora"):
        load_config(TOPIC, [f"data.train={a}", "data.weights={real: 2}"])


def test_a_family_without_weights_is_refused_before_a_run(two_corpora, tmp_path, monkeypatch, capsys):
    from conftest import run_main

    a, b = two_corpora
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    code, err = run_main(
        monkeypatch, capsys, "train", str(ROOT / "configs/topic/minilm_finetune.yaml"),
        "--set", f"data.train={{real: {a}, written: {b}}}", "--set", "data.weights={real: 2}",
        "--set", "evaluation.sets=[]", store=uri,
    )  # fmt: skip
    assert code == 2, err
    assert err[-1].startswith("error: data.weights: family 'transformer' cannot weight sentences"), err
    assert not (tmp_path / "m.db").exists() or mlflow.MlflowClient(uri).search_runs(["0"]) == []
