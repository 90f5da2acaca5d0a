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


def test_cv_scores_each_corpus(two_corpora, tmp_path, monkeypatch):
    from train.training.cv import cross_validate

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a, b = two_corpora
    config = load_config(TOPIC, [f"data.train={{real: {a}, written: {b}}}", "evaluation.sets=[]", *FAST])
    run = mlflow.get_run(cross_validate(config, TOPIC, folds=3))
    metrics = run.data.metrics
    for name in ("real", "written"):
        assert 0 < metrics[f"cv/{name}/f1_macro_mean"] <= 1
    assert metrics["cv/real/f1_macro_mean"] != metrics["cv/written/f1_macro_mean"]
    assert {"dataset_sha256.a.jsonl", "dataset_sha256.b.jsonl"} <= set(run.data.tags)


def test_train_reports_dev_per_corpus(two_corpora, tmp_path, monkeypatch):
    from train.training.pipeline import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a, b = two_corpora
    config = load_config(TOPIC, [f"data.train={{real: {a}, written: {b}}}", "evaluation.sets=[]", *FAST])
    metrics = mlflow.get_run(train(config, TOPIC)).data.metrics
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
